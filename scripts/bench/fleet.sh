#!/usr/bin/env bash
# Fleet benchmark (issue #16): how fast sessions are set up on one node
# alone and in a fleet, and what each setup costs etcd, with
# cmd/4over6-load, in one run of three cases:
#
#   one node     4over6d without -etcd (the baseline)
#   fleet of 1   one node of a fleet: a 3-member etcd cluster behind it
#   fleet of 3   three nodes of a fleet on the same 3-member cluster; the
#                load generator spreads its sessions round-robin over them
#
# Per case: --sessions setups as fast as --concurrency allows (each from a
# source address of its own, so each is a new client to the fleet), held
# for a few seconds, then closed. Reported: setups/s (first dial to last
# 101), setup latency p50/p99, their ratios to the one-node case, and for
# the fleet cases what etcd did between just before the first setup and
# just after the last, divided by the sessions: write revisions (one per
# transaction that changed something), keys put, Raft proposals, and WAL
# fsyncs (etcd's /metrics: etcd_debugging_mvcc_current_revision,
# etcd_mvcc_put_total, etcd_server_proposals_committed_total,
# etcd_disk_wal_fsync_duration_seconds_count, the highest value over the
# members). Those windows also hold the nodes' own refreshes (their
# numbers, at most every 2 s per node) and lease renewals: that is what a
# setup costs in a running fleet. Each fleet case gets a fresh etcd cluster.
#
# Topology: one IPv6 segment (a bridge in a hub namespace, 2001:db8:f::/64)
# joins the load generator (2001:db8:f::2, its source addresses
# 2001:db8:c::/64 on its loopback, routed by the nodes through it, so that
# no node needs a neighbour entry per source), the etcd namespace (members
# on 2001:db8:f::e1, ::e2, ::e3, data directories on disk under the work
# directory) and three node namespaces (2001:db8:f::11, ::12, ::13: listen
# and underlay address). Nodes run with -nat off (setups only, no traffic).
#
# Address exception (as in scale.sh): more than 254 sessions need a pool
# bigger than a documentation /24, so the nodes lease 100.64.0.0/18
# (RFC 6598 shared address space), claimed by fleet nodes in blocks of
# --block-bits (default 26: 64 addresses) as their sessions grow. Those addresses
# exist only inside the node namespaces and the load generator's frames.
#
# usage: sudo scripts/bench/fleet.sh [--sessions N] [--concurrency N] [--block-bits N] [--smoke] [--no-doc] [--keep]
#   --sessions N     sessions per case (default 2000, at most 16000: the /18)
#   --concurrency N  setups in flight at once (default 256)
#   --block-bits N   the fleet's -block-bits (default 26: 64 addresses a block, 32 claims for 2000 sessions)
#   --smoke          200 sessions, no doc update; under a minute; exit 0 iff every
#                    case set up every session and produced every number (a full
#                    run only warns: sessions that time out are a result too)
#   --no-doc         print the table only; do not touch docs/fleet.md
#   --keep           keep the work directory (logs, JSON) for inspection
#
# Everything it creates (namespaces, processes by PID, etcd data
# directories) is removed on exit, also on failure or Ctrl-C. Every wait is
# bounded, and so is the load generator (-setup-limit, -duration).
set -euo pipefail
cd "$(dirname "$0")/../.."

SESSIONS=2000
CONCURRENCY=256
HOLD=3
SETUP_LIMIT=120
BLOCK_BITS=26
SMOKE=
DOC=1
while (($#)); do
	case $1 in
	--sessions) SESSIONS=$2; shift ;;
	--concurrency) CONCURRENCY=$2; shift ;;
	--block-bits) BLOCK_BITS=$2; shift ;;
	--smoke) SMOKE=1 SESSIONS=200 HOLD=1 SETUP_LIMIT=30 DOC= ;;
	--no-doc) DOC= ;;
	--keep) BENCH_KEEP_WORK=1 ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;/^set -e/d'; exit 0 ;;
	*) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[[ $SESSIONS =~ ^[0-9]+$ ]] && ((SESSIONS >= 3 && SESSIONS <= 16000)) || { echo "--sessions must be 3..16000 (pool /18)" >&2; exit 2; }
[[ $CONCURRENCY =~ ^[0-9]+$ ]] && ((CONCURRENCY >= 1 && CONCURRENCY <= 4096)) || { echo "--concurrency must be 1..4096" >&2; exit 2; }
[[ $BLOCK_BITS =~ ^[0-9]+$ ]] && ((BLOCK_BITS >= 19 && BLOCK_BITS <= 30)) || { echo "--block-bits must be 19..30 (pool /18)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo $0" >&2; exit 1; }

source scripts/deps.sh
source scripts/bench/lib.sh
bench_traps
bench_install jq:jq curl:curl

BIN=$BENCH_WORK/bin
POOL=100.64.0.0/18
PORT=5678
ETCD=/usr/bin/etcd
[[ -x $ETCD ]] || { echo "$ETCD missing (scripts/deps.sh installs etcd-server)" >&2; exit 1; }
machine_json >"$BENCH_WORK/machine.json"

say "building 4over6d and 4over6-load"
mkdir -p "$BIN"
go build -o "$BIN/" ./cmd/4over6d ./cmd/4over6-load

NS_H=b46fh-$BENCH_ID NS_E=b46fe-$BENCH_ID NS_C=b46fc-$BENCH_ID
NS_N=(b46f1-$BENCH_ID b46f2-$BENCH_ID b46f3-$BENCH_ID)
NODE_ADDR=(2001:db8:f::11 2001:db8:f::12 2001:db8:f::13)
ETCD_ADDR=(2001:db8:f::e1 2001:db8:f::e2 2001:db8:f::e3)
CLIENT_ADDR=2001:db8:f::2
say "topology: hub $NS_H (bridge), etcd $NS_E, nodes ${NS_N[*]}, load generator $NS_C ($SESSIONS source addresses)"
for ns in "$NS_H" "$NS_E" "$NS_C" "${NS_N[@]}"; do bench_ns_add "$ns"; done
in_ns "$NS_H" ip link add fab0 type bridge mcast_snooping 0 # flood neighbour discovery, no querier needed
in_ns "$NS_H" ip link set fab0 up

# attach NS PORT ADDR...: a veth from the hub's bridge (hub end PORT) to
# fab0 in NS, with ADDRs on the fabric's /64.
attach() {
	local ns=$1 port=$2 a
	shift 2
	ip link add "$port" netns "$NS_H" type veth peer name fab0 netns "$ns"
	in_ns "$NS_H" ip link set "$port" master fab0 up
	for a in "$@"; do in_ns "$ns" ip addr add "$a/64" dev fab0 nodad; done
	in_ns "$ns" ip link set fab0 up
}
attach "$NS_E" fe "${ETCD_ADDR[@]}"
attach "$NS_C" fc "$CLIENT_ADDR"
for i in 0 1 2; do
	attach "${NS_N[i]}" "f$((i + 1))" "${NODE_ADDR[i]}"
	in_ns "${NS_N[i]}" ip -6 route add 2001:db8:c::/64 via "$CLIENT_ADDR" dev fab0
done
for ((i = 1; i <= SESSIONS; i++)); do printf 'addr add 2001:db8:c::%x/128 dev lo nodad\n' "$i"; done | in_ns "$NS_C" ip -batch -
SRC_RANGE=$(printf '2001:db8:c::1-2001:db8:c::%x' "$SESSIONS")
# Nodes answer the sources (through the route above); etcd only the nodes.
for a in "${NODE_ADDR[@]}"; do
	wait_for 20 in_ns "$NS_C" ping -6 -c1 -W1 -I 2001:db8:c::1 "$a" || { echo "no route from $NS_C (2001:db8:c::1) to $a" >&2; exit 1; }
done
for a in "${ETCD_ADDR[@]}"; do
	wait_for 20 in_ns "${NS_N[0]}" ping -6 -c1 -W1 "$a" || { echo "no route from ${NS_N[0]} to $a" >&2; exit 1; }
done

# ---- etcd ----

ETCD_PIDS=()
ETCD_URLS=$(printf 'http://[%s]:2379,' "${ETCD_ADDR[@]}")
ETCD_URLS=${ETCD_URLS%,}

# etcd_start CASE: a fresh 3-member cluster (data directories under the
# work directory, on disk like a real member's), healthy on return.
etcd_start() {
	local c=$1 i name cluster=
	for i in 0 1 2; do cluster+="e$((i + 1))=http://[${ETCD_ADDR[i]}]:2380,"; done
	ETCD_PIDS=()
	for i in 0 1 2; do
		name=e$((i + 1))
		mkdir -p "$BENCH_WORK/etcd-$c"
		# env -i: etcd reads ETCD_* variables as flags.
		bench_start "etcd-$c-$name" "$NS_E" env -i PATH=/usr/bin:/bin "$ETCD" --name "$name" \
			--data-dir "$BENCH_WORK/etcd-$c/$name" \
			--listen-client-urls "http://[${ETCD_ADDR[i]}]:2379" --advertise-client-urls "http://[${ETCD_ADDR[i]}]:2379" \
			--listen-peer-urls "http://[${ETCD_ADDR[i]}]:2380" --initial-advertise-peer-urls "http://[${ETCD_ADDR[i]}]:2380" \
			--initial-cluster "${cluster%,}" --initial-cluster-state new --initial-cluster-token "b46f-$BENCH_ID-$c" \
			--heartbeat-interval 100 --election-timeout 1000 --logger zap --log-outputs stderr
		local pid_var="PID_etcd_${c//-/_}_$name"
		ETCD_PIDS+=("${!pid_var}")
	done
	for i in 0 1 2; do
		wait_for 30 etcd_healthy "${ETCD_ADDR[i]}" || { tail -20 "$BENCH_WORK/etcd-$c-e$((i + 1)).log" >&2; exit 1; }
	done
}
etcd_healthy() { in_ns "$NS_E" curl -sf --max-time 2 "http://[$1]:2379/health" | grep -q '"health":"true"'; }

# etcd_stop CASE: the members by PID, then their data.
etcd_stop() {
	bench_stop "${ETCD_PIDS[@]}"
	ETCD_PIDS=()
	rm -rf "${BENCH_WORK:?}/etcd-$1"
}

# etcd_counts: "revision puts proposals fsyncs", each the highest over the
# members (a follower may be a few entries behind the leader).
etcd_counts() {
	local a
	for a in "${ETCD_ADDR[@]}"; do
		in_ns "$NS_E" curl -sf --max-time 5 "http://[$a]:2379/metrics" | awk '
			$1 == "etcd_debugging_mvcc_current_revision" {r = $2}
			$1 == "etcd_mvcc_put_total" {p = $2}
			$1 == "etcd_server_proposals_committed_total" {c = $2}
			$1 == "etcd_disk_wal_fsync_duration_seconds_count" {f = $2}
			END {if (r == "" || p == "" || c == "" || f == "") exit 1; printf "%d %d %d %d\n", r, p, c, f}'
	done | awk '{for (i = 1; i <= 4; i++) if (NR == 1 || $i > m[i]) m[i] = $i}
		END {if (NR != 3) exit 1; printf "%d %d %d %d\n", m[1], m[2], m[3], m[4]}'
}

# ---- nodes ----

NODE_PIDS=()
# nodes_start CASE COUNT [FLEET]: COUNT nodes, in the fleet when FLEET is
# set (etcd prefix per case), each serving on return.
nodes_start() {
	local c=$1 count=$2 fleet=${3:-} i args
	NODE_PIDS=()
	for ((i = 0; i < count; i++)); do
		args=(-listen "[${NODE_ADDR[i]}]:$PORT" -pool "$POOL" -tun b46tun -nat off -dns 198.51.100.53
			-admin 127.0.0.1:9604 -log-level warn)
		[[ -n $fleet ]] && args+=(-etcd "$ETCD_URLS" -node "n$((i + 1))" -block-bits "$BLOCK_BITS" -etcd-prefix "/b46f/$c/")
		# -log-level warn keeps 2000 session lines out of the log; "serving" is logged at info, so readiness is polled on /metrics.
		bench_start "$c-n$((i + 1))" "${NS_N[i]}" "$BIN/4over6d" "${args[@]}"
		local pid_var="PID_${c//-/_}_n$((i + 1))"
		NODE_PIDS+=("${!pid_var}")
		wait_for 30 node_ready "$i" "${!pid_var}" || { tail -20 "$BENCH_WORK/$c-n$((i + 1)).log" >&2; exit 1; }
	done
}
node_metric() { in_ns "${NS_N[$1]}" curl -sf --max-time 5 http://127.0.0.1:9604/metrics | awk -v m="$2" '$1 == m {v = $2} END {print v}'; }
# node_rtt I: "SUM COUNT" of the node's etcd round trips so far.
node_rtt() {
	in_ns "${NS_N[$1]}" curl -sf --max-time 5 http://127.0.0.1:9604/metrics |
		awk '$1 ~ /^fourover6d_etcd_rtt_seconds_sum/ {s += $2} $1 ~ /^fourover6d_etcd_rtt_seconds_count/ {c += $2} END {printf "%f %d\n", s, c}'
}
# rtt_all COUNT: the sums of node_rtt over the first COUNT nodes.
rtt_all() {
	local i
	for ((i = 0; i < $1; i++)); do node_rtt "$i"; done | awk '{s += $1; c += $2} END {printf "%f %d\n", s, c}'
}
# node_refusals I: what the node refused, as JSON {"REASON": N}: the
# connections it closed before a session (by reason) and lease denials.
node_refusals() {
	in_ns "${NS_N[$1]}" curl -sf --max-time 5 http://127.0.0.1:9604/metrics | awk '
		/^fourover6d_connections_refused_total\{/ && $2 > 0 {r = $1; sub(/.*reason="/, "", r); sub(/".*/, "", r); printf "%s\t%d\n", r, $2}
		$1 == "fourover6d_lease_denials_total" && $2 > 0 {printf "lease_denials\t%d\n", $2}' |
		jq -Rsc 'split("\n") | map(select(length > 0) | split("\t") | {(.[0]): (.[1] | tonumber)}) | add // {}'
}
node_ready() {
	kill -0 "$2" 2>/dev/null || return 1
	[[ $(node_metric "$1" fourover6d_sessions) == 0 ]] && in_ns "${NS_N[$1]}" ss -Htln "sport = :$PORT" | grep -q .
}

# ---- one case ----

# run_case CASE COUNT [FLEET]: start the nodes, set up the sessions, read
# the numbers, stop everything of the case; writes $BENCH_WORK/CASE.json.
run_case() {
	local c=$1 count=$2 fleet=${3:-} servers= i before= after= per_node=() blocks=0 refusals=()
	[[ -n $fleet ]] && etcd_start "$c"
	nodes_start "$c" "$count" "$fleet"
	for ((i = 0; i < count; i++)); do servers+="[${NODE_ADDR[i]}]:$PORT,"; done
	local rtt0= rtt1=
	[[ -n $fleet ]] && before=$(etcd_counts) rtt0=$(rtt_all "$count")
	bench_start "load-$c" "$NS_C" "$BIN/4over6-load" -server "${servers%,}" -n "$SESSIONS" -rate 0 \
		-concurrency "$CONCURRENCY" -sources "$SRC_RANGE" -duration "${HOLD}s" -setup-limit "${SETUP_LIMIT}s" \
		-heartbeat 20s -json
	local pid_var="PID_load_${c//-/_}"
	local load=${!pid_var}
	wait_for $((SETUP_LIMIT + 30)) grep -q "setup done" "$BENCH_WORK/load-$c.log" || { tail "$BENCH_WORK/load-$c.log" >&2; exit 1; }
	[[ -n $fleet ]] && after=$(etcd_counts) rtt1=$(rtt_all "$count")
	for ((i = 0; i < count; i++)); do
		per_node+=("$(node_metric "$i" fourover6d_sessions)")
		refusals+=("$(node_refusals "$i")")
		[[ -n $fleet ]] && { b=$(node_metric "$i" fourover6d_fleet_blocks); blocks=$((blocks + ${b:-0})); }
	done
	wait "$load" || true # exit 1 only says that some session failed; the report counts them
	bench_stop "$load"
	bench_stop "${NODE_PIDS[@]}"
	[[ -n $fleet ]] && etcd_stop "$c"
	local load_json
	load_json=$(grep '^{' "$BENCH_WORK/load-$c.log" | tail -1)
	[[ -n $load_json ]] || { tail "$BENCH_WORK/load-$c.log" >&2; exit 1; }
	local etcd=null
	if [[ -n $fleet ]]; then
		read -r r0 p0 c0 f0 <<<"$before"
		read -r r1 p1 c1 f1 <<<"$after"
		read -r s0 n0 <<<"$rtt0"
		read -r s1 n1 <<<"$rtt1"
		etcd=$(jq -nc --argjson r $((r1 - r0)) --argjson p $((p1 - p0)) --argjson c $((c1 - c0)) --argjson f $((f1 - f0)) \
			--argjson s "$(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.6f", b - a}')" --argjson n $((n1 - n0)) \
			'{revisions:$r, puts:$p, proposals:$c, fsyncs:$f, node_requests:$n, node_rtt_ms_mean:(if $n > 0 then $s / $n * 1000 else null end)}')
	fi
	jq -nc --arg c "$c" --argjson nodes "$count" --argjson load "$load_json" --argjson etcd "$etcd" \
		--argjson per_node "$(printf '%s\n' "${per_node[@]}" | jq -sc .)" \
		--argjson refusals "$(printf '%s\n' "${refusals[@]}" | jq -sc .)" \
		--argjson blocks "$blocks" --argjson fleet "$([[ -n $fleet ]] && echo true || echo false)" \
		'{case:$c, nodes:$nodes, fleet:$fleet, load:$load, etcd:$etcd, sessions_per_node:$per_node, refused_per_node:$refusals, blocks:(if $fleet then $blocks else null end)}' \
		>"$BENCH_WORK/$c.json"
	jq -r '"   \(.load.established)/\(.load.requested) established (per node: \(.sessions_per_node | map(tostring) | join("/"))), \(.load.setup_rate | floor) setups/s, p50 \(.load.setup_latency_ms.p50) ms, p99 \(.load.setup_latency_ms.p99) ms" +
		(if (.refused_per_node | map(length) | add) > 0 then "; refused per node: \(.refused_per_node | map(tojson) | join(" "))" else "" end) +
		(if .etcd then "; etcd: \(.etcd.revisions) revisions, \(.etcd.puts) puts, \(.etcd.proposals) proposals, \(.etcd.fsyncs) fsyncs; \(.blocks) blocks; nodes: \(.etcd.node_requests) etcd requests, mean round trip \(.etcd.node_rtt_ms_mean | floor) ms" else "" end)' \
		"$BENCH_WORK/$c.json" >&2
}

say "one node (no -etcd), $SESSIONS sessions"
run_case one-node 1
say "fleet of 1 (3-member etcd), $SESSIONS sessions"
run_case fleet-1 1 fleet
say "fleet of 3 (3-member etcd), $SESSIONS sessions over 3 nodes"
run_case fleet-3 3 fleet

jq --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg etcd "$("$ETCD" --version | awk '/^etcd Version/ {print $3}')" \
	--arg fs "$(df -T "$BENCH_WORK" | awk 'NR == 2 {print $2}')" \
	'. + {load_after:$load, etcd:$etcd, etcd_fs:$fs}' "$BENCH_WORK/machine.json" >"$BENCH_WORK/m.json"
jq -n --slurpfile m "$BENCH_WORK/m.json" --slurpfile cases <(cat "$BENCH_WORK"/{one-node,fleet-1,fleet-3}.json) \
	--argjson n "$SESSIONS" --argjson conc "$CONCURRENCY" --arg pool "$POOL" --argjson bb "$BLOCK_BITS" \
	'{machine:$m[0], sessions:$n, concurrency:$conc, pool:$pool, block_bits:$bb, cases:$cases}' >"$BENCH_WORK/fleet.json"

# The table (markdown), ratios against the one-node case.
jq -r '
	def r1: (. * 10 | round) / 10;
	def r2: (. * 100 | round) / 100;
	(.cases[0].load) as $base |
	"Run of \(.machine.date), commit \(.machine.commit)\(if .machine.dirty then " (with local changes)" else "" end): \(.machine.nproc) cores (\(.machine.cpu)), load \(.machine.load_before) before and \(.machine.load_after) after; Linux \(.machine.kernel), \(.machine.go), etcd \(.machine.etcd) (3 members in one namespace, data on \(.machine.etcd_fs)). \(.sessions) sessions per case, \(.concurrency) setups in flight, one source address per session, pool \(.pool) in /\(.block_bits) blocks.",
	"",
	"| case | established | setups/s | vs one node | p50 ms | p99 ms | p50, p99 vs one node | etcd write revisions / setup | keys put / setup | Raft proposals / setup | WAL fsyncs / setup | blocks | etcd round trip seen by the nodes, mean ms |",
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|",
	(.cases[] | .load as $l | "| \(.case | sub("one-node"; "one node") | sub("fleet-"; "fleet of "))" +
		" | \($l.established)/\($l.requested)" +
		" | \($l.setup_rate | round)" +
		" | \(($l.setup_rate / $base.setup_rate) | r2)" +
		" | \($l.setup_latency_ms.p50 | r1) | \($l.setup_latency_ms.p99 | r1)" +
		" | \(($l.setup_latency_ms.p50 / $base.setup_latency_ms.p50) | r1), \(($l.setup_latency_ms.p99 / $base.setup_latency_ms.p99) | r1)" +
		(if .etcd then
			" | \((.etcd.revisions / $l.established) | r2) | \((.etcd.puts / $l.established) | r2) | \((.etcd.proposals / $l.established) | r2) | \((.etcd.fsyncs / $l.established) | r2) | \(.blocks) | \(.etcd.node_rtt_ms_mean | r1) |"
		else " | - | - | - | - | - | - |" end))
' "$BENCH_WORK/fleet.json" >"$BENCH_WORK/table.md"
say "results"
cat "$BENCH_WORK/table.md"

# Every case should have set up every session and produced every number.
check=$(jq -r --argjson n "$SESSIONS" '.cases[] | select(
		.load.established != $n or .load.setup_rate <= 0 or .load.setup_latency_ms.p50 <= 0 or .load.setup_latency_ms.p99 <= 0
		or ((.sessions_per_node | add) != $n)
		or (.fleet and (.etcd.revisions <= 0 or .etcd.puts <= 0 or .etcd.proposals <= 0 or .blocks <= 0))
	) | .case' "$BENCH_WORK/fleet.json")
# A smoke run fails then; a full run reports what it measured (the table
# says how many sessions each case set up) and warns.
if [[ -n $check ]]; then
	echo "incomplete cases: $(echo $check) (logs: run with --keep)" >&2
	[[ -n $SMOKE ]] && exit 1
fi

if [[ -n $DOC ]]; then
	# Between the markers of docs/fleet.md, the table of this run.
	begin='<!-- fleet.sh: begin -->' end='<!-- fleet.sh: end -->'
	grep -qxF "$begin" docs/fleet.md && grep -qxF "$end" docs/fleet.md || { echo "docs/fleet.md lacks the markers $begin / $end" >&2; exit 1; }
	awk -v b="$begin" -v e="$end" -v t="$BENCH_WORK/table.md" '
		$0 == b {print; while ((getline l < t) > 0) print l; skip = 1; next}
		$0 == e {skip = 0}
		!skip' docs/fleet.md >"$BENCH_WORK/fleet.md"
	cp "$BENCH_WORK/fleet.md" docs/fleet.md
	say "docs/fleet.md updated"
fi
