#!/usr/bin/env bash
# Scale benchmark of 4over6d with cmd/4over6-load, on a namespace topology
# like run.sh's (client IPv6 only - server - internet IPv4 only):
#
#   - for each N (default 1000, 10000 and 100000): a fresh server, N sessions set up
#     as fast as possible and held idle (heartbeats only); RSS per session
#     (VmRSS after - before, / N), Go heap and goroutines per session (from
#     /metrics on the admin endpoint, 127.0.0.1:9604 inside the server
#     namespace), server CPU over a 30 s idle window, setup rate and latency;
#   - 50 active sessions, each sending UDP packets through its tunnel to a
#     sink on the internet host that echoes them back: aggregate throughput
#     both ways and the server's CPU and memory, at a moderate rate and at a
#     rate beyond what the server can carry (default 200 and 2000 packets/s
#     per session).
#
# Address exception: 100,000 sessions need a pool bigger than any
# documentation /24, so the server leases 100.64.0.0/10 (RFC 6598 shared
# address space). Those addresses exist only inside the server namespace
# and the load generator's frames: the server NATs them to 198.51.100.1
# towards the internet namespace, and nothing is routed anywhere else.
#
# Limits: the open-file limit is raised for this script's processes only
# (ulimit -n, a server and a load generator each hold one descriptor per
# session); the sessions come from 256 source addresses, so each uses
# about N/256 of its ~28,000 ephemeral ports; the script checks the
# conntrack table (the server namespace has NAT rules, so its sessions are
# tracked) and refuses to start a size that cannot fit.
#
# usage: sudo scripts/bench/scale.sh [--sessions "1000 10000 100000"] [--idle S] [--active-pps "N..."] [--active-time S] [--no-doc] [--keep]
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZES="1000 10000 100000"
IDLE=30
ACTIVE=50
ACTIVE_PPS="200 2000"
ACTIVE_TIME=15
SOURCES=256
CONCURRENCY=256
DOC=1
MAX_N=0
while (($#)); do
	case $1 in
	--sessions) SIZES=$2; shift ;;
	--idle) IDLE=$2; shift ;;
	--active-pps) ACTIVE_PPS=$2; shift ;;
	--active-time) ACTIVE_TIME=$2; shift ;;
	--concurrency) CONCURRENCY=$2; shift ;;
	--no-doc) DOC= ;;
	--keep) BENCH_KEEP_WORK=1 ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;/^set -e/d'; exit 0 ;;
	*) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
for n in $SIZES; do
	[[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 100000)) || { echo "--sessions: each N must be 1..100000 (the load generator's bound)" >&2; exit 2; }
	if ((n > MAX_N)); then MAX_N=$n; fi
done
[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo $0" >&2; exit 1; }
# One descriptor per session in the server and in the load generator, plus
# their listeners, logs and the admin endpoint's sockets. Raising the hard
# limit needs CAP_SYS_RESOURCE; without it (some containers) the sizes that
# cannot fit under the hard limit are skipped, and said so.
FD_MARGIN=1000
want_fds=$((MAX_N + FD_MARGIN > 65536 ? MAX_N + FD_MARGIN : 65536))
ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds=$(ulimit -n)
fit=()
for n in $SIZES; do
	if ((n + FD_MARGIN > fds)); then
		echo "skipping $n sessions: they need $((n + FD_MARGIN)) open files per process, and the limit here is $fds (hard limit $(ulimit -Hn); raising it needs CAP_SYS_RESOURCE)" >&2
	else
		fit+=("$n")
	fi
done
((${#fit[@]})) || { echo "no size fits under the open-file limit ($fds)" >&2; exit 1; }
SIZES="${fit[*]}"
ct_max=$(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo 0)
if ((ct_max != 0 && ct_max < MAX_N + 10000)); then
	echo "net.netfilter.nf_conntrack_max is $ct_max: too small for $MAX_N tracked sessions (raise it, or ask for fewer)" >&2
	exit 1
fi

source scripts/deps.sh
source scripts/bench/lib.sh
bench_traps
bench_install jq:jq curl:curl

BIN=$BENCH_WORK/bin
HZ=$(getconf CLK_TCK)
POOL=100.64.0.0/10
machine_json >"$BENCH_WORK/machine.json"

say "building 4over6d and 4over6-load"
mkdir -p "$BIN"
go build -o "$BIN/" ./cmd/4over6d ./cmd/4over6-load

NS_C=b46c-$BENCH_ID NS_S=b46s-$BENCH_ID NS_I=b46i-$BENCH_ID
say "topology: $NS_C (client, IPv6 only, $SOURCES source addresses) - $NS_S (server) - $NS_I (internet)"
for ns in "$NS_C" "$NS_S" "$NS_I"; do bench_ns_add "$ns"; done
ip link add c6 netns "$NS_S" type veth peer name eth6 netns "$NS_C"
in_ns "$NS_S" ip addr add 2001:db8:1::1/64 dev c6 nodad
in_ns "$NS_C" ip addr add 2001:db8:1::2/64 dev eth6 nodad
first=$((0x1000)) last=$((0x1000 + SOURCES - 1))
for ((i = first; i <= last; i++)); do printf 'addr add 2001:db8:1::%x/64 dev eth6 nodad\n' "$i"; done |
	in_ns "$NS_C" ip -batch -
SRC_RANGE=$(printf '2001:db8:1::%x-2001:db8:1::%x' "$first" "$last")
ip link add inet4 netns "$NS_S" type veth peer name eth4 netns "$NS_I"
in_ns "$NS_S" ip addr add 198.51.100.1/24 dev inet4
in_ns "$NS_I" ip addr add 198.51.100.2/24 dev eth4
for l in "$NS_S c6" "$NS_C eth6" "$NS_S inet4" "$NS_I eth4"; do in_ns ${l% *} ip link set ${l#* } up; done
in_ns "$NS_S" ip route add default via 198.51.100.2
in_ns "$NS_I" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
wait_for 10 in_ns "$NS_C" ping -6 -c1 -W1 2001:db8:1::1

# metric NAME: one value from /metrics (awk reads everything: an early exit
# would fail curl with SIGPIPE, and the pipeline with it).
metric() { in_ns "$NS_S" curl -sf --max-time 5 http://127.0.0.1:9604/metrics | awk -v m="$1" '$1 == m {v = $2} END {print v}'; }
sessions_up() { [[ $(metric fourover6d_sessions) == "$1" ]]; }

start_server() {
	bench_start "4over6d-$1" "$NS_S" "$BIN/4over6d" -listen '[2001:db8:1::1]:5678' -pool "$POOL" -tun b46tun \
		-max-per-source 0 -nat inet4 -dns 198.51.100.53 -admin 127.0.0.1:9604
	local pid_var="PID_4over6d_${1//-/_}"
	SERVER=${!pid_var}
	wait_for 10 grep -q "4over6d serving" "$BENCH_WORK/4over6d-$1.log" || { cat "$BENCH_WORK/4over6d-$1.log"; exit 1; }
	wait_for 10 metric go_goroutines
	sleep 2 # let the fresh process settle before the baseline
}

RUNS=()
for n in $SIZES; do
	say "$n idle sessions"
	start_server "$n"
	rss0=$(rss_kib "$SERVER") gor0=$(metric go_goroutines) heap0=$(metric go_memstats_heap_inuse_bytes) stack0=$(metric go_memstats_stack_inuse_bytes)
	hold=$((IDLE + 30))
	bench_start "load-$n" "$NS_C" "$BIN/4over6-load" -server '[2001:db8:1::1]:5678' -n "$n" -rate 0 \
		-concurrency "$CONCURRENCY" -sources "$SRC_RANGE" -duration "${hold}s" -heartbeat 20s -json
	pid_var="PID_load_$n"
	LOAD=${!pid_var}
	wait_for 150 grep -q "setup done" "$BENCH_WORK/load-$n.log" || { tail "$BENCH_WORK/load-$n.log"; exit 1; }
	grep "setup" "$BENCH_WORK/load-$n.log" | tail -3 >&2
	sleep 5
	rss1=$(rss_kib "$SERVER") gor1=$(metric go_goroutines) heap1=$(metric go_memstats_heap_inuse_bytes) stack1=$(metric go_memstats_stack_inuse_bytes)
	sess=$(metric fourover6d_sessions)
	echo "   server: $sess sessions, RSS $rss0 -> $rss1 KiB, goroutines $gor0 -> $gor1" >&2
	t0=$(cpu_ticks "$SERVER")
	sleep "$IDLE"
	t1=$(cpu_ticks "$SERVER")
	rss2=$(rss_kib "$SERVER") heap2=$(metric go_memstats_heap_inuse_bytes)
	idle_cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b-a)/hz}')
	echo "   idle ${IDLE}s: server CPU ${idle_cpu} s, RSS $rss2 KiB" >&2
	wait "$LOAD" || true # it stops by itself after -duration; exit 1 only reports failed sessions
	bench_stop "$LOAD"
	load_json=$(grep '^{' "$BENCH_WORK/load-$n.log" | tail -1)
	[[ -n $load_json ]] || { tail "$BENCH_WORK/load-$n.log"; exit 1; }
	jq -nc --argjson n "$n" --argjson load "$load_json" --argjson rss0 "$rss0" --argjson rss1 "$rss1" --argjson rss2 "$rss2" \
		--argjson gor0 "$gor0" --argjson gor1 "$gor1" --argjson heap0 "$heap0" --argjson heap1 "$heap1" \
		--argjson stack0 "$stack0" --argjson stack1 "$stack1" --argjson heap2 "$heap2" \
		--argjson cpu "$idle_cpu" --argjson idle "$IDLE" --argjson sess "${sess:-0}" \
		'{n:$n, load:$load, rss0_kib:$rss0, rss1_kib:$rss1, rss2_kib:$rss2, goroutines0:$gor0, goroutines1:$gor1,
		  heap0_bytes:$heap0, heap1_bytes:$heap1, heap2_bytes:$heap2, stack0_bytes:$stack0, stack1_bytes:$stack1, idle_cpu_s:$cpu, idle_seconds:$idle, server_sessions:$sess}' \
		>"$BENCH_WORK/idle-$n.json"
	RUNS+=("$BENCH_WORK/idle-$n.json")
	jq -r '"   load: \(.established)/\(.requested) established, \(.setup_rate|floor) sessions/s, p50 \(.setup_latency_ms.p50) ms, p99 \(.setup_latency_ms.p99) ms"' <<<"$load_json" >&2
	bench_stop "$SERVER"
done

# softnet_drops: packets the kernel dropped from its per-CPU input backlog
# (machine-wide; a TUN write that overflows it is lost silently).
softnet_drops() {
	local total=0 processed dropped rest
	while read -r processed dropped rest; do total=$((total + 16#$dropped)); done </proc/net/softnet_stat
	echo "$total"
}
tun_stats() { in_ns "$NS_S" ip -s -j link show b46tun | jq -c '.[0] | .stats64 + {txqlen} | {rx_packets:.rx.packets, rx_dropped:.rx.dropped, tx_packets:.tx.packets, tx_dropped:.tx.dropped, txqlen}'; }
# server_drops: every drop counter of the server with its count, as a JSON
# object (zeros included, so the report can say a reason did not occur).
server_drops() {
	in_ns "$NS_S" curl -sf --max-time 5 http://127.0.0.1:9604/metrics |
		awk 'match($0, /^fourover6d_drops_total\{reason="[a-z_]+"\}/) {r = substr($0, 32, RLENGTH - 33); printf "%s\"%s\":%s", sep, r, $NF; sep = ","} BEGIN {printf "{"} END {print "}"}'
}
# udp_stat NS FIELD: a UDP counter of namespace NS's kernel (/proc/net/snmp),
# e.g. RcvbufErrors (dropped: the receiving socket's buffer was full) or
# NoPorts (no socket bound to the port).
udp_stat() { in_ns "$1" awk -v f="$2" '$1 == "Udp:" {if (!n) {for (i = 2; i <= NF; i++) col[$i] = i; n = 1} else print $col[f]}' /proc/net/snmp; }
# settle: wait (at most 10 s) until the server's packet counters stop
# moving: after the load generator has closed its sessions, the server
# still forwards what was in flight (the uplink left in its TCP receive
# buffers, their echoes), and the drops of those belong in the account.
settle() {
	local prev= cur
	for _ in $(seq 50); do
		cur="$(tun_stats) $(metric 'fourover6d_packets_total{direction="in"}') $(metric 'fourover6d_packets_total{direction="out"}') $(server_drops)"
		[[ $cur == "$prev" ]] && return 0
		prev=$cur
		sleep 0.2
	done
}

ACTIVE_RUNS=()
for pps in $ACTIVE_PPS; do
	say "$ACTIVE active sessions, $pps packets/s each, ${ACTIVE_TIME}s"
	start_server "active-$pps"
	bench_start "sink-$pps" "$NS_I" "$BIN/4over6-load" -sink 198.51.100.2:9000 -echo -duration "$((ACTIVE_TIME + 20))s" -json
	t0=$(cpu_ticks "$SERVER") sd0=$(softnet_drops) rb0=$(udp_stat "$NS_I" RcvbufErrors) np0=$(udp_stat "$NS_I" NoPorts)
	bench_start "load-active-$pps" "$NS_C" "$BIN/4over6-load" -server '[2001:db8:1::1]:5678' -n "$ACTIVE" -sources "$SRC_RANGE" \
		-duration "${ACTIVE_TIME}s" -packets "$pps" -size 1400 -target 198.51.100.2:9000 -json
	pid_var="PID_load_active_$pps"
	wait "${!pid_var}" || true
	t1=$(cpu_ticks "$SERVER") sd1=$(softnet_drops)
	rss=$(rss_kib "$SERVER") hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER/status")
	pkts_in=$(metric 'fourover6d_packets_total{direction="in"}') pkts_out=$(metric 'fourover6d_packets_total{direction="out"}')
	drops=$(in_ns "$NS_S" curl -sf --max-time 5 http://127.0.0.1:9604/metrics | awk '/^fourover6d_drops_total/ && $2 != 0 {sub(/fourover6d_drops_total/, ""); printf "%s%s %s", sep, $1, $2; sep=", "}')
	tun=$(tun_stats)
	# The account of every packet: read once the server has forwarded what
	# was in flight at the close (the sink still echoing) and the sink has
	# stopped.
	settle
	pid_var="PID_sink_$pps"
	bench_stop "${!pid_var}"
	settle
	rb1=$(udp_stat "$NS_I" RcvbufErrors) np1=$(udp_stat "$NS_I" NoPorts)
	waits=$(metric fourover6d_tun_reader_waits_total) wait_s=$(metric fourover6d_tun_reader_wait_seconds_total)
	settled=$(jq -nc --argjson in "$(metric 'fourover6d_packets_total{direction="in"}')" \
		--argjson out "$(metric 'fourover6d_packets_total{direction="out"}')" --argjson tun "$(tun_stats)" \
		--argjson drops "$(server_drops)" --argjson rcvbuf "$((rb1 - rb0))" --argjson noport "$((np1 - np0))" \
		--argjson waits "${waits:-0}" --argjson wait_s "${wait_s:-0}" \
		'{packets_in:$in, packets_out:$out, tun:$tun, drops:$drops, sink_rcvbuf_errors:$rcvbuf, sink_no_port:$noport,
		  tun_reader_waits:$waits, tun_reader_wait_s:$wait_s}')
	bench_stop "$SERVER"
	load_json=$(grep '^{' "$BENCH_WORK/load-active-$pps.log" | tail -1)
	sink_json=$(grep '^{' "$BENCH_WORK/sink-$pps.log" | tail -1)
	[[ -n $load_json && -n $sink_json ]] || { tail "$BENCH_WORK/load-active-$pps.log" "$BENCH_WORK/sink-$pps.log"; exit 1; }
	# The server's CPU is read over the whole load run (setup + hold + close); the hold dominates.
	active_cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b-a)/hz}')
	hold_s=$(jq '.hold_seconds' <<<"$load_json")
	jq -n --argjson n "$ACTIVE" --argjson pps "$pps" --argjson secs "$hold_s" --argjson load "$load_json" \
		--argjson sink "$sink_json" --argjson cpu "$active_cpu" --argjson rss "$rss" --argjson hwm "$hwm" --arg drops "$drops" \
		--argjson pin "${pkts_in:-0}" --argjson pout "${pkts_out:-0}" --argjson tun "${tun:-null}" \
		--argjson softnet "$((sd1 - sd0))" --argjson settled "${settled:-null}" \
		'{sessions:$n, pps_per_session:$pps, size:1400, seconds:$secs, load:$load, sink:$sink, server_cpu_s:$cpu, rss_kib:$rss,
		  hwm_kib:$hwm, server_drops:$drops, server_packets_in:$pin, server_packets_out:$pout, tun:$tun, softnet_drops:$softnet,
		  settled:$settled}' \
		>"$BENCH_WORK/active-$pps.json"
	ACTIVE_RUNS+=("$BENCH_WORK/active-$pps.json")
	jq -r '"   sink: \(.sink.pps|floor) packets/s, \(.sink.mbit_ipv4|floor) Mbit/s up; server: \(.server_packets_in) in, \(.server_packets_out) out, CPU \(.server_cpu_s) s, peak RSS \(.hwm_kib) KiB; TUN \(.tun)"' \
		"$BENCH_WORK/active-$pps.json" >&2
done

jq --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" '. + {load_after:$load}' "$BENCH_WORK/machine.json" >"$BENCH_WORK/m.json"
jq -n --slurpfile m "$BENCH_WORK/m.json" --slurpfile idle <(cat "${RUNS[@]}") --slurpfile active <(cat "${ACTIVE_RUNS[@]}") \
	--arg pool "$POOL" --argjson sources "$SOURCES" --argjson conc "$CONCURRENCY" \
	'{machine:$m[0], pool:$pool, sources:$sources, concurrency:$conc, idle:$idle, active:$active}' >"$BENCH_WORK/scale.json"

say "results"
args=(scale -json "$BENCH_WORK/scale.json")
[[ -n $DOC ]] && args+=(-md docs/performance.md)
go run ./scripts/bench/report "${args[@]}"
