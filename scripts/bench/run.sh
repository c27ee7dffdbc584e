#!/usr/bin/env bash
# Data-path benchmark: 4over6d + 4over6c against the carrier (no tunnel),
# OpenVPN 2.6 over TCP/IPv6 and wireguard-go, one case after the other on
# one namespace topology, in one run:
#
#   client (IPv6 only) ── 2001:db8:1::/64, MTU 1600 ── server (IPv6+IPv4) ── 198.51.100.0/24 ── internet (IPv4 only)
#   2001:db8:1::2                                      2001:db8:1::1, 198.51.100.1                 198.51.100.2 (iperf3 -s)
#
# Every tunnel leases 192.0.2.0/24 (server side 192.0.2.1) with an inner
# MTU of 1500 and is NATed out of the server towards the internet host.
# The client-server link has MTU 1600 so that wireguard (80 bytes of
# overhead) carries 1500-byte inner packets unfragmented like the others.
#
# Per case: ping RTT p50/p99 over 200 pings at 10 ms (to the server's inner
# address, and to the internet host), iperf3 TCP single stream upload and
# download (each run --repeat times, median reported), 4 parallel streams
# (upload), UDP with 1400-byte and with 64-byte datagrams at max rate
# (received packets/s, loss), and the CPU seconds of the tunnel processes
# per GB moved (utime+stime from /proc/PID/stat). The carrier, 4over6,
# OpenVPN and wireguard-go also run 8 clients at once, one TCP upload
# each, from 8 more client namespaces (b46k1-PID .. b46k8-PID, each with
# its own link to the server, 2001:db8:1:K::2/64, and its own tunnel
# client), to 8 iperf3 servers: the aggregate Mbit/s. The 4over6-rate
# case runs the tunnel with the server's -rate-limit at 8mbit and at
# 100mbit, one TCP stream down and up once each, and reports what was
# achieved as a ratio to the limit.
#
# usage: sudo scripts/bench/run.sh [--time N] [--smoke] [--cases LIST] [--no-doc] [--keep]
#   --time N      seconds per iperf3 test (default 10)
#   --repeat N    runs of the single-stream TCP tests, the median is reported (default 3)
#   --smoke       1 s per test, 20 pings, no doc update; exit 0 iff every case produced every number
#                 (the 64-byte UDP and 8-client rows included);
#                 then scripts/bench/fleet.sh --smoke (one node and fleets of 1 and 3 on etcd, ~30 s)
#   --cases LIST  comma list of carrier,4over6,4over6-plain,4over6-rate,openvpn,wireguard (default all;
#                 4over6-plain is the tunnel with -offload=false, the in-run baseline for offloads;
#                 4over6-rate the tunnel with -rate-limit 8mbit and 100mbit)
#   --no-doc      print the tables only; do not touch docs/performance.md or the PNG
#   --keep        keep the work directory (logs, iperf3 JSON) for inspection
#
# BENCH_4OVER6D_FLAGS, if set, is split on spaces and added to every
# 4over6d of the 4over6 cases, e.g. BENCH_4OVER6D_FLAGS='-tun-queues 1'
# to compare the single-queue TUN with the default (one queue per CPU)
# in back-to-back runs.
#
# It installs what it needs with apt (iperf3, openvpn, wireguard-tools,
# gnuplot-nox, openssl, jq) and builds wireguard-go from its Go module into
# a temporary directory (never into this module's go.mod). Everything it
# creates (namespaces, processes, TUNs, nftables tables, sockets, files) is
# removed on exit, also on failure or Ctrl-C. Documentation addresses only.
set -euo pipefail
cd "$(dirname "$0")/../.."

T=10
REPEAT=3
PINGS=200
SMOKE=
CASES=carrier,4over6,4over6-plain,4over6-rate,openvpn,wireguard
RATES=(8mbit 100mbit)
NCLIENTS=8 # clients of the multi-client row, one TCP stream each
DOC=1
while (($#)); do
	case $1 in
	--time) T=$2; shift ;;
	--smoke) SMOKE=1 T=1 PINGS=20 REPEAT=1 DOC= ;;
	--repeat) REPEAT=$2; shift ;;
	--cases) CASES=$2; shift ;;
	--no-doc) DOC= ;;
	--keep) BENCH_KEEP_WORK=1 ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;/^set -e/d'; exit 0 ;;
	*) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[[ $T =~ ^[0-9]+$ ]] && ((T >= 1 && T <= 120)) || { echo "--time must be 1..120" >&2; exit 2; }
[[ $REPEAT =~ ^[0-9]+$ ]] && ((REPEAT >= 1 && REPEAT <= 9)) || { echo "--repeat must be 1..9" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo $0" >&2; exit 1; }

source scripts/deps.sh
source scripts/bench/lib.sh
bench_traps
has_case() { [[ ,$CASES, == *,$1,* ]]; }

bench_install iperf3:iperf3 jq:jq
has_case openvpn && bench_install openvpn:openvpn openssl:openssl
has_case wireguard && bench_install wg:wireguard-tools
[[ -n $DOC ]] && bench_install gnuplot:gnuplot-nox

BIN=$BENCH_WORK/bin
RES=$BENCH_WORK/results.jsonl
: >"$RES"
HZ=$(getconf CLK_TCK)
machine_json >"$BENCH_WORK/machine.json"

say "building 4over6d and 4over6c (go build, no -race)$(has_case wireguard && echo ', installing wireguard-go')"
mkdir -p "$BIN"
go build -o "$BIN/" ./cmd/4over6d ./cmd/4over6c ./scripts/bench/report
if has_case wireguard; then
	# go install in a temporary module-less directory: wireguard-go never
	# enters this project's go.mod. The version is pinned to what @latest
	# resolved to for the runs in docs/performance.md, so runs on different
	# days measure against the same code (WIREGUARD_GO_VERSION overrides it). Without the module proxy, the module cache serves it
	# (it was verified when it was first downloaded).
	WG_MODULE=golang.zx2c4.com/wireguard@${WIREGUARD_GO_VERSION:-v0.0.0-20260522210424-ecfc5a8d5446}
	wg=$WG_MODULE
	(cd "$BENCH_WORK" && GOBIN=$BIN GOFLAGS= go install "$wg") ||
		(cd "$BENCH_WORK" && GOBIN=$BIN GOFLAGS= GOSUMDB=off GOPROXY="file://$(go env GOMODCACHE)/cache/download" \
			go install "$wg")
	mv "$BIN/wireguard" "$BIN/wireguard-go"
fi

NS_C=b46c-$BENCH_ID NS_S=b46s-$BENCH_ID NS_I=b46i-$BENCH_ID
NS_K=()
for ((k = 1; k <= NCLIENTS; k++)); do NS_K+=("b46k$k-$BENCH_ID"); done
say "topology: $NS_C (client, IPv6 only) - $NS_S (server) - $NS_I (internet, IPv4 only); clients ${NS_K[0]} .. ${NS_K[-1]}"
for ns in "$NS_C" "$NS_S" "$NS_I" "${NS_K[@]}"; do bench_ns_add "$ns"; done
bench_links
bench_client_links "${NS_K[@]}"
in_ns "$NS_S" sysctl -qw net.ipv4.ip_forward=1
in_ns "$NS_C" sysctl -qw net.ipv6.conf.all.forwarding=0
in_ns "$NS_I" sysctl -qw net.ipv6.conf.all.disable_ipv6=1

listening() { in_ns "$1" ss -Htln "sport = :$2" | grep -q .; }
bench_start iperf-server "$NS_S" iperf3 -s -B 2001:db8:1::1
bench_start iperf-inet "$NS_I" iperf3 -s -B 198.51.100.2
# One iperf3 server per client of the multi-client row (an iperf3 server
# runs one test at a time), on ports 5301.. in both server and internet.
for ((k = 1; k <= NCLIENTS; k++)); do
	bench_start "iperf-server-$k" "$NS_S" iperf3 -s -B 2001:db8:1::1 -p $((5300 + k))
	bench_start "iperf-inet-$k" "$NS_I" iperf3 -s -B 198.51.100.2 -p $((5300 + k))
done
wait_for 10 in_ns "$NS_C" ping -6 -c1 -W1 2001:db8:1::1
for ns in "${NS_K[@]}"; do wait_for 10 in_ns "$ns" ping -6 -c1 -W1 2001:db8:1::1; done
wait_for 10 in_ns "$NS_S" ping -c1 -W1 198.51.100.2
for port in 5201 $(seq 5301 $((5300 + NCLIENTS))); do
	for ns in "$NS_S" "$NS_I"; do
		wait_for 10 listening "$ns" "$port" || { echo "no iperf3 server listening on $ns port $port" >&2; exit 1; }
	done
done

TUNNEL_PIDS=()
# iperf CASE METRIC NS DST [iperf3 args]: one iperf3 test, one JSON line in $RES.
iperf() {
	local case=$1 metric=$2 ns=$3 dst=$4
	shift 4
	local out=$BENCH_WORK/$case-$metric.json t0=0 t1=0 rc=0
	((${#TUNNEL_PIDS[@]})) && t0=$(cpu_ticks "${TUNNEL_PIDS[@]}")
	in_ns "$ns" timeout $((T + 30)) iperf3 -c "$dst" -t "$T" -J "$@" >"$out.raw" 2>&1 || rc=$?
	# iperf3 may print a warning line before its JSON (e.g. a UDP block larger than the MSS).
	sed -n '/^{/,$p' "$out.raw" >"$out"
	((${#TUNNEL_PIDS[@]})) && t1=$(cpu_ticks "${TUNNEL_PIDS[@]}")
	local cpu=null
	((${#TUNNEL_PIDS[@]})) && cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b-a)/hz}')
	if ((rc != 0)) || ! jq -e '.end' "$out" >/dev/null 2>&1; then
		echo "   $case $metric: iperf3 failed (exit $rc): $(jq -r '.error // empty' "$out" 2>/dev/null || tail -1 "$out")" >&2
		jq -nc --arg c "$case" --arg m "$metric" '{case:$c, metric:$m, error:true}' >>"$RES"
		return 0
	fi
	jq -c --arg c "$case" --arg m "$metric" --argjson cpu "$cpu" '
		if .start.test_start.protocol == "UDP" then
			(.end.sum_received // .end.sum) as $r |
			{case:$c, metric:$m, mbit:($r.bits_per_second/1e6), bytes:$r.bytes, seconds:$r.seconds,
			 sent_packets:(.end.sum_sent.packets // .end.sum.packets), packets:($r.packets - ($r.lost_packets // 0)),
			 lost:($r.lost_packets // 0), loss_pct:($r.lost_percent // 0),
			 pps:(($r.packets - ($r.lost_packets // 0)) / $r.seconds), cpu_s:$cpu}
		else
			{case:$c, metric:$m, mbit:(.end.sum_received.bits_per_second/1e6), bytes:.end.sum_received.bytes,
			 seconds:.end.sum_received.seconds, retransmits:(.end.sum_sent.retransmits // 0), cpu_s:$cpu}
		end' "$out" >>"$RES"
	jq -r 'select(.metric=="'"$metric"'" and .case=="'"$case"'") |
		"   \(.case) \(.metric): \(.mbit|floor) Mbit/s" + (if .pps then ", \(.pps|floor) packets/s received, loss \(.loss_pct*10|round/10)%" else "" end) +
		(if .cpu_s then ", tunnel CPU \(.cpu_s) s" else "" end)' "$RES" | tail -1 >&2
}

# pingstat CASE METRIC NS DST: RTT percentiles over $PINGS pings at 10 ms.
pingstat() {
	local case=$1 metric=$2 ns=$3 dst=$4 out=$BENCH_WORK/$1-$2.ping
	in_ns "$ns" ping -n -c "$PINGS" -i 0.01 -W 1 "$dst" >"$out" 2>&1 || true
	local n
	n=$(grep -c 'time=' "$out" || true)
	if ((n == 0)); then
		echo "   $case $metric: no ping reply from $dst" >&2
		jq -nc --arg c "$case" --arg m "$metric" '{case:$c, metric:$m, error:true}' >>"$RES"
		return 0
	fi
	sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' "$out" | sort -g | awk -v c="$case" -v m="$metric" -v sent="$PINGS" '
		{ v[NR] = $1 * 1000 }
		function rank(p,   i) { i = int(p * NR + 0.5); if (i < 1) i = 1; if (i > NR) i = NR; return v[i] }
		END { printf "{\"case\":\"%s\",\"metric\":\"%s\",\"p50_us\":%.0f,\"p99_us\":%.0f,\"replies\":%d,\"sent\":%d}\n", c, m, rank(0.5), rank(0.99), NR, sent }' >>"$RES"
	jq -r 'select(.metric=="'"$metric"'" and .case=="'"$case"'") | "   \(.case) \(.metric): p50 \(.p50_us) us, p99 \(.p99_us) us (\(.replies)/\(.sent) replies)"' "$RES" | tail -1 >&2
}

# measure CASE NS DST PING_SERVER [PING_INTERNET]: the whole set of one case.
measure() {
	local case=$1 ns=$2 dst=$3
	# Warm up (neighbour entries, first-packet paths) before the idle RTT.
	in_ns "$ns" ping -n -q -c 20 -i 0.05 -W 1 "$4" >/dev/null 2>&1 || true
	pingstat "$case" ping_server "$ns" "$4"
	[[ -n ${5:-} ]] && pingstat "$case" ping_internet "$ns" "$5"
	local r
	for ((r = 1; r <= REPEAT; r++)); do
		iperf "$case" tcp_up "$ns" "$dst"
		iperf "$case" tcp_down "$ns" "$dst" -R
	done
	iperf "$case" tcp_p4 "$ns" "$dst" -P 4
	iperf "$case" udp "$ns" "$dst" -u -b 0 -l 1400
	iperf "$case" udp64 "$ns" "$dst" -u -b 0 -l 64
}

# iperf_multi CASE METRIC DST NS...: one TCP upload from each NS at once,
# the k-th to port 5300+k, for $T s; one JSON line in $RES with the sum of
# what the servers received (and the slowest and fastest client). The CPU
# is that of TUNNEL_PIDS, which the caller sets to every tunnel process.
iperf_multi() {
	local case=$1 metric=$2 dst=$3
	shift 3
	local out=$BENCH_WORK/$case-$metric t0=0 t1=0 k=0 ns pids=() rc=0 fail=
	((${#TUNNEL_PIDS[@]})) && t0=$(cpu_ticks "${TUNNEL_PIDS[@]}")
	for ns in "$@"; do
		k=$((k + 1))
		in_ns "$ns" timeout $((T + 30)) iperf3 -c "$dst" -p $((5300 + k)) -t "$T" -J >"$out-$k.raw" 2>&1 &
		pids+=($!)
	done
	for k in "${!pids[@]}"; do wait "${pids[$k]}" || rc=$?; done
	((${#TUNNEL_PIDS[@]})) && t1=$(cpu_ticks "${TUNNEL_PIDS[@]}")
	for ((k = 1; k <= $#; k++)); do
		sed -n '/^{/,$p' "$out-$k.raw" >"$out-$k.json"
		jq -e '.end.sum_received' "$out-$k.json" >/dev/null 2>&1 || fail+=" $k"
	done
	if ((rc != 0)) || [[ -n $fail ]]; then
		echo "   $case $metric: iperf3 failed (exit $rc) for client(s)$fail" >&2
		jq -nc --arg c "$case" --arg m "$metric" '{case:$c, metric:$m, error:true}' >>"$RES"
		return 0
	fi
	local cpu=null
	((${#TUNNEL_PIDS[@]})) && cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b-a)/hz}')
	jq -sc --arg c "$case" --arg m "$metric" --argjson cpu "$cpu" '
		[.[].end | {mbit:(.sum_received.bits_per_second/1e6), bytes:.sum_received.bytes,
		 seconds:.sum_received.seconds, retransmits:(.sum_sent.retransmits // 0)}] as $r |
		{case:$c, metric:$m, clients:($r|length), mbit:($r|map(.mbit)|add), bytes:($r|map(.bytes)|add),
		 seconds:($r|map(.seconds)|max), retransmits:($r|map(.retransmits)|add),
		 client_min_mbit:($r|map(.mbit)|min), client_max_mbit:($r|map(.mbit)|max), cpu_s:$cpu}' \
		"$out"-*.json >>"$RES"
	jq -r 'select(.metric=="'"$metric"'" and .case=="'"$case"'") |
		"   \(.case) \(.metric): \(.mbit|floor) Mbit/s from \(.clients) clients (\(.client_min_mbit|floor)..\(.client_max_mbit|floor) each)" +
		(if .cpu_s then ", tunnel CPU \(.cpu_s) s" else "" end)' "$RES" | tail -1 >&2
}

# wait_clients SECONDS FUNC: wait_for FUNC NS for each namespace of the
# multi-client row (FUNC checks that its tunnel is up).
wait_clients() {
	local ns
	for ns in "${NS_K[@]}"; do wait_for "$1" "$2" "$ns" || return 1; done
}

# pids_of NAME: the PIDs of NAME-1 .. NAME-$NCLIENTS started by bench_start.
pids_of() {
	local k v
	for ((k = 1; k <= NCLIENTS; k++)); do
		v=PID_${1//-/_}_$k
		echo "${!v}"
	done
}

# NAT for the OpenVPN and wireguard cases (4over6d installs its own).
nat_on() {
	in_ns "$NS_S" nft -f - <<-EOF
		table ip bench46 {
			chain post { type nat hook postrouting priority srcnat; ip saddr 192.0.2.0/24 oifname "inet4" masquerade; }
		}
	EOF
}
nat_off() { in_ns "$NS_S" nft delete table ip bench46 2>/dev/null || true; }
has_inet_addr() { in_ns "$1" ip -4 -o addr show dev "$2" | grep -q inet; }

if has_case carrier; then
	say "carrier: plain IPv6 client->server, plain IPv4 server->internet"
	TUNNEL_PIDS=()
	measure carrier-v6 "$NS_C" 2001:db8:1::1 2001:db8:1::1
	measure carrier-v4 "$NS_S" 198.51.100.2 198.51.100.2
	iperf_multi carrier-v6 tcp_8c 2001:db8:1::1 "${NS_K[@]}"
	srv=()
	for ((k = 1; k <= NCLIENTS; k++)); do srv+=("$NS_S"); done
	iperf_multi carrier-v4 tcp_8c 198.51.100.2 "${srv[@]}"
	# The floor under any user-space tunnel's idle RTT: UDP echo between two
	# processes over the client namespace's loopback, paced like the pings.
	in_ns "$NS_C" "$BIN/report" echo -n "$PINGS" -case floor >>"$RES"
	jq -r 'select(.case=="floor") | "   floor (2 process wake-ups) ping_server: p50 \(.p50_us) us, p99 \(.p99_us) us"' "$RES" >&2
fi

# start_4over6 [FLAG...] starts 4over6d + 4over6c, both given FLAGs, the
# server also BENCH_4OVER6D_FLAGS and SERVER_FLAGS, and waits for the tunnel.
SERVER_FLAGS=()
read -ra EXTRA_SERVER_FLAGS <<<"${BENCH_4OVER6D_FLAGS:-}"
start_4over6() {
	bench_start 4over6d "$NS_S" "$BIN/4over6d" -listen '[2001:db8:1::1]:5678' -pool 192.0.2.0/24 -tun b46tun \
		-dns 198.51.100.53 -nat inet4 "${EXTRA_SERVER_FLAGS[@]}" "${SERVER_FLAGS[@]}" "$@"
	wait_for 10 grep -q "4over6d serving" "$BENCH_WORK/4over6d.log" || { cat "$BENCH_WORK/4over6d.log"; exit 1; }
	bench_start 4over6c "$NS_C" "$BIN/4over6c" -server '[2001:db8:1::1]:5678' -tun b46tun "$@"
	wait_for 10 has_inet_addr "$NS_C" b46tun || { cat "$BENCH_WORK/4over6c.log"; exit 1; }
	TUNNEL_PIDS=("$PID_4over6d" "$PID_4over6c")
}

# run_4over6 CASE [FLAG...] measures 4over6d + 4over6c, both given FLAGs.
run_4over6() {
	local name=$1
	shift
	start_4over6 "$@"
	measure "$name" "$NS_C" 198.51.100.2 192.0.2.1 198.51.100.2
	[[ $name == 4over6 ]] && multi_4over6 "$@"
	bench_stop "$PID_4over6c" "$PID_4over6d"
}

# multi_4over6 [FLAG...] measures the multi-client row through the running
# 4over6d: one more 4over6c (given FLAGs) in each client namespace, all
# with the same TUN name, each namespace having its own.
k_4over6_up() { has_inet_addr "$1" b46tun; }
multi_4over6() {
	local k pids
	for ((k = 1; k <= NCLIENTS; k++)); do
		bench_start "4over6c-$k" "${NS_K[k - 1]}" "$BIN/4over6c" -server '[2001:db8:1::1]:5678' -tun b46tun "$@"
	done
	mapfile -t pids < <(pids_of 4over6c)
	wait_clients 20 k_4over6_up || { tail -5 "$BENCH_WORK"/4over6c-*.log; exit 1; }
	TUNNEL_PIDS=("$PID_4over6d" "${pids[@]}")
	iperf_multi 4over6 tcp_8c 198.51.100.2 "${NS_K[@]}"
	bench_stop "${pids[@]}"
	TUNNEL_PIDS=("$PID_4over6d" "$PID_4over6c")
}

# run_4over6_rate RATE measures one TCP stream down, then up, through a
# server with -rate-limit RATE, as case 4over6-RATE. Down first: a paced
# upload leaves data queued in the client's socket buffers for seconds,
# which would hold back the download's ACKs; each rate gets fresh processes.
run_4over6_rate() {
	SERVER_FLAGS=(-rate-limit "$1")
	start_4over6
	SERVER_FLAGS=()
	in_ns "$NS_C" ping -n -q -c 5 -i 0.05 -W 1 198.51.100.2 >/dev/null 2>&1 || true
	iperf "4over6-$1" tcp_down "$NS_C" 198.51.100.2 -R
	iperf "4over6-$1" tcp_up "$NS_C" 198.51.100.2
	bench_stop "$PID_4over6c" "$PID_4over6d"
}

if has_case 4over6; then
	say "4over6d + 4over6c${BENCH_4OVER6D_FLAGS:+ (server: $BENCH_4OVER6D_FLAGS)}"
	run_4over6 4over6
fi

if has_case 4over6-plain; then
	say "4over6d + 4over6c without TUN offloads"
	run_4over6 4over6-plain -offload=false
fi

if has_case 4over6-rate; then
	for rate in "${RATES[@]}"; do
		say "4over6d + 4over6c with -rate-limit $rate"
		run_4over6_rate "$rate"
	done
fi

if has_case openvpn; then
	say "OpenVPN $(openvpn --version | awk 'NR==1 {print $2}') over TCP/IPv6, no encryption"
	pki=$BENCH_WORK/pki
	mkdir -p "$pki"
	(
		cd "$pki"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
			-keyout ca.key -out ca.crt 2>/dev/null
		for who in server client; do
			eku=serverAuth
			[[ $who == client ]] && eku=clientAuth
			openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=bench-$who" \
				-keyout "$who.key" -out "$who.csr" 2>/dev/null
			printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=%s\n' "$eku" >"$who.ext"
			openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
				-extfile "$who.ext" -out "$who.crt" 2>/dev/null
		done
	)
	common="dev-type tun
ca $pki/ca.crt
data-ciphers none
cipher none
auth none
reneg-bytes 0
reneg-sec 0
disable-dco
tun-mtu 1500
verb 3"
	cat >"$BENCH_WORK/ovpn-server.conf" <<-EOF
		dev b46ovs
		proto tcp6-server
		local 2001:db8:1::1
		port 1194
		topology subnet
		server 192.0.2.0 255.255.255.0
		push "route 198.51.100.0 255.255.255.0"
		cert $pki/server.crt
		key $pki/server.key
		dh none
		keepalive 10 60
		duplicate-cn
		$common
	EOF
	cat >"$BENCH_WORK/ovpn-client.conf" <<-EOF
		client
		dev b46ovc
		proto tcp6-client
		remote 2001:db8:1::1 1194
		nobind
		remote-cert-tls server
		cert $pki/client.crt
		key $pki/client.key
		$common
	EOF
	nat_on
	bench_start openvpn-server "$NS_S" openvpn --config "$BENCH_WORK/ovpn-server.conf"
	wait_for 10 listening "$NS_S" 1194 || { cat "$BENCH_WORK/openvpn-server.log"; exit 1; }
	bench_start openvpn-client "$NS_C" openvpn --config "$BENCH_WORK/ovpn-client.conf"
	wait_for 20 grep -q "Initialization Sequence Completed" "$BENCH_WORK/openvpn-client.log" ||
		{ tail -20 "$BENCH_WORK/openvpn-server.log" "$BENCH_WORK/openvpn-client.log"; exit 1; }
	TUNNEL_PIDS=("$PID_openvpn_server" "$PID_openvpn_client")
	measure openvpn "$NS_C" 198.51.100.2 192.0.2.1 198.51.100.2
	# The multi-client row: the same client configuration in each client
	# namespace (the server allows it with duplicate-cn).
	for ((k = 1; k <= NCLIENTS; k++)); do
		bench_start "openvpn-client-$k" "${NS_K[k - 1]}" openvpn --config "$BENCH_WORK/ovpn-client.conf"
	done
	mapfile -t pids < <(pids_of openvpn-client)
	for ((k = 1; k <= NCLIENTS; k++)); do
		wait_for 30 grep -q "Initialization Sequence Completed" "$BENCH_WORK/openvpn-client-$k.log" ||
			{ tail -20 "$BENCH_WORK/openvpn-server.log" "$BENCH_WORK/openvpn-client-$k.log"; exit 1; }
	done
	TUNNEL_PIDS=("$PID_openvpn_server" "${pids[@]}")
	iperf_multi openvpn tcp_8c 198.51.100.2 "${NS_K[@]}"
	bench_stop "${pids[@]}"
	bench_stop "$PID_openvpn_client" "$PID_openvpn_server"
	nat_off
fi

if has_case wireguard; then
	wgs=b46w${BENCH_ID}s wgc=b46w${BENCH_ID}c
	say "wireguard-go $("$BIN/wireguard-go" --version 2>/dev/null | awk '{print $2; exit}') over IPv6 ($wgs, $wgc)"
	BENCH_FILES+=("/var/run/wireguard/$wgs.sock" "/var/run/wireguard/$wgc.sock")
	(umask 077 && wg genkey >"$BENCH_WORK/wgs.key" && wg genkey >"$BENCH_WORK/wgc.key")
	wg pubkey <"$BENCH_WORK/wgs.key" >"$BENCH_WORK/wgs.pub"
	wg pubkey <"$BENCH_WORK/wgc.key" >"$BENCH_WORK/wgc.pub"
	nat_on
	# Distinct interface names give each side its own UAPI socket in the
	# shared /var/run/wireguard.
	bench_start wireguard-server "$NS_S" "$BIN/wireguard-go" -f "$wgs"
	bench_start wireguard-client "$NS_C" "$BIN/wireguard-go" -f "$wgc"
	wait_for 10 test -S "/var/run/wireguard/$wgs.sock" || { cat "$BENCH_WORK/wireguard-server.log"; exit 1; }
	wait_for 10 test -S "/var/run/wireguard/$wgc.sock" || { cat "$BENCH_WORK/wireguard-client.log"; exit 1; }
	in_ns "$NS_S" wg set "$wgs" listen-port 51820 private-key "$BENCH_WORK/wgs.key" \
		peer "$(cat "$BENCH_WORK/wgc.pub")" allowed-ips 192.0.2.2/32
	in_ns "$NS_C" wg set "$wgc" private-key "$BENCH_WORK/wgc.key" \
		peer "$(cat "$BENCH_WORK/wgs.pub")" endpoint '[2001:db8:1::1]:51820' allowed-ips 0.0.0.0/0
	in_ns "$NS_S" ip addr add 192.0.2.1/24 dev "$wgs"
	in_ns "$NS_C" ip addr add 192.0.2.2/24 dev "$wgc"
	in_ns "$NS_S" ip link set "$wgs" mtu 1500 up
	in_ns "$NS_C" ip link set "$wgc" mtu 1500 up
	in_ns "$NS_C" ip route add 198.51.100.0/24 dev "$wgc"
	wait_for 10 in_ns "$NS_C" ping -c1 -W1 192.0.2.1 || { echo "wireguard tunnel does not pass traffic" >&2; exit 1; }
	TUNNEL_PIDS=("$PID_wireguard_server" "$PID_wireguard_client")
	measure wireguard "$NS_C" 198.51.100.2 192.0.2.1 198.51.100.2
	# The multi-client row: a peer of its own for each client namespace,
	# 192.0.2.(K+2), each with its own key and UAPI socket.
	for ((k = 1; k <= NCLIENTS; k++)); do
		ifk=b46w${BENCH_ID}k$k
		BENCH_FILES+=("/var/run/wireguard/$ifk.sock")
		(umask 077 && wg genkey >"$BENCH_WORK/wgk$k.key")
		wg pubkey <"$BENCH_WORK/wgk$k.key" >"$BENCH_WORK/wgk$k.pub"
		bench_start "wireguard-client-$k" "${NS_K[k - 1]}" "$BIN/wireguard-go" -f "$ifk"
	done
	mapfile -t pids < <(pids_of wireguard-client)
	for ((k = 1; k <= NCLIENTS; k++)); do
		ifk=b46w${BENCH_ID}k$k ns=${NS_K[k - 1]}
		wait_for 10 test -S "/var/run/wireguard/$ifk.sock" || { cat "$BENCH_WORK/wireguard-client-$k.log"; exit 1; }
		in_ns "$NS_S" wg set "$wgs" peer "$(cat "$BENCH_WORK/wgk$k.pub")" allowed-ips "192.0.2.$((k + 2))/32"
		in_ns "$ns" wg set "$ifk" private-key "$BENCH_WORK/wgk$k.key" \
			peer "$(cat "$BENCH_WORK/wgs.pub")" endpoint '[2001:db8:1::1]:51820' allowed-ips 0.0.0.0/0
		in_ns "$ns" ip addr add "192.0.2.$((k + 2))/24" dev "$ifk"
		in_ns "$ns" ip link set "$ifk" mtu 1500 up
		in_ns "$ns" ip route add 198.51.100.0/24 dev "$ifk"
	done
	for ns in "${NS_K[@]}"; do
		wait_for 10 in_ns "$ns" ping -c1 -W1 192.0.2.1 || { echo "wireguard tunnel from $ns does not pass traffic" >&2; exit 1; }
	done
	TUNNEL_PIDS=("$PID_wireguard_server" "${pids[@]}")
	iperf_multi wireguard tcp_8c 198.51.100.2 "${NS_K[@]}"
	bench_stop "${pids[@]}"
	bench_stop "$PID_wireguard_client" "$PID_wireguard_server"
	nat_off
fi

jq --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson t "$T" --argjson pings "$PINGS" \
	--arg iperf "$(iperf3 --version | awk 'NR==1 {print $2}')" \
	--arg openvpn "$(command -v openvpn >/dev/null && openvpn --version | awk 'NR==1 {print $2}')" \
	--arg wg "$([[ -x $BIN/wireguard-go ]] && "$BIN/wireguard-go" --version | awk '{print $2; exit}')" \
	--arg wgmod "${WG_MODULE:-}" --argjson clients "$NCLIENTS" \
	'. + {load_after:$load, seconds:$t, pings:$pings, iperf3:$iperf, openvpn:$openvpn, wireguard_go:$wg,
	      wireguard_go_module:$wgmod, clients:$clients}' \
	"$BENCH_WORK/machine.json" >"$BENCH_WORK/machine2.json"
mv "$BENCH_WORK/machine2.json" "$BENCH_WORK/machine.json"

say "results"
args=(bench -dir "$BENCH_WORK" -cases "$CASES")
[[ -n $SMOKE ]] && args+=(-check)
[[ -n $DOC ]] && args+=(-md docs/performance.md -png docs/img/bench.png)
go run ./scripts/bench/report "${args[@]}"

# The fleet's setup path (issue #16) on a real etcd cluster, as small as
# it stays meaningful; it cleans up after itself like this script.
if [[ -n $SMOKE ]]; then
	say "fleet smoke: scripts/bench/fleet.sh --smoke"
	bash scripts/bench/fleet.sh --smoke
fi
