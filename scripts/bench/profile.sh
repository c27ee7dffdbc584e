#!/usr/bin/env bash
# CPU profiles of 4over6d and 4over6c with perf (4over6d exposes no pprof),
# on the same topology as run.sh: idle pings through the tunnel (scheduler
# events and syscalls per ping, and a timeline of every ping's hops), a
# single-stream TCP upload and download through the tunnel, a burst of
# session setups by cmd/4over6-load, and the same number of sessions held
# idle.
# Writes, per phase and process, `perf report` summaries (self time by
# symbol, by shared object, and time including callees) and a summary of
# the syscalls made (perf stat on syscall tracepoints: cheap, unlike
# perf trace, which slows the tunnel tenfold), into the
# output directory (default: a new temporary directory, printed at the end).
#
# usage: sudo scripts/bench/profile.sh [--time N] [--sessions N] [--out DIR] [--keep-data] [--phases LIST]
#   --keep-data   keep the perf.data files for `perf report -i` with call graphs
#   --phases LIST comma list of ping,tcp-up,tcp-down,setup,idle (default all)
#   --offload B   the tunnel's -offload on both ends (default true)
set -euo pipefail
cd "$(dirname "$0")/../.."

T=8
SESSIONS=5000
OUT=
KEEP_DATA=
PHASES=ping,tcp-up,tcp-down,setup,idle
OFFLOAD=true
while (($#)); do
	case $1 in
	--time) T=$2; shift ;;
	--sessions) SESSIONS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--keep-data) KEEP_DATA=1 ;;
	--phases) PHASES=$2; shift ;;
	--offload) OFFLOAD=$2; shift ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;/^set -e/d'; exit 0 ;;
	*) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo $0" >&2; exit 1; }

source scripts/deps.sh
source scripts/bench/lib.sh
bench_traps
bench_install iperf3:iperf3 jq:jq perf:linux-perf
OUT=${OUT:-$(mktemp -d /tmp/4over6-profile.XXXXXX)}
mkdir -p "$OUT"
BIN=$BENCH_WORK/bin
mkdir -p "$BIN"
go build -o "$BIN/" ./cmd/4over6d ./cmd/4over6c ./cmd/4over6-load

NS_C=b46c-$BENCH_ID NS_S=b46s-$BENCH_ID NS_I=b46i-$BENCH_ID
for ns in "$NS_C" "$NS_S" "$NS_I"; do bench_ns_add "$ns"; done
bench_links
wait_for 10 in_ns "$NS_C" ping -6 -c1 -W1 2001:db8:1::1

bench_start iperf-inet "$NS_I" iperf3 -s -B 198.51.100.2
bench_start 4over6d "$NS_S" "$BIN/4over6d" -listen '[2001:db8:1::1]:5678' -pool 100.64.0.0/18 -tun b46tun \
	-dns 198.51.100.53 -nat inet4 -max-per-source 0 -offload="$OFFLOAD"
wait_for 10 grep -q "4over6d serving" "$BENCH_WORK/4over6d.log"
bench_start 4over6c "$NS_C" "$BIN/4over6c" -server '[2001:db8:1::1]:5678' -tun b46tun -offload="$OFFLOAD"
wait_for 10 bash -c "ip netns exec $NS_C ip -4 -o addr show dev b46tun | grep -q inet"
sleep 1

SYSCALLS=raw_syscalls:sys_enter
for sc in read write writev readv futex epoll_pwait nanosleep sched_yield getsockopt setsockopt accept4; do
	SYSCALLS+=",syscalls:sys_enter_$sc"
done

# profile PHASE SECONDS CMD...: perf record both processes while CMD runs,
# then summarise each.
profile() {
	local phase=$1 secs=$2
	shift 2
	local name pid perfs=()
	for name in 4over6d 4over6c; do
		pid_var=PID_$name
		pid=${!pid_var}
		perf record -q -F 999 -g -p "$pid" -o "$OUT/$phase-$name.data" -- sleep "$secs" 2>/dev/null &
		perfs+=($!)
		perf stat -e "$SYSCALLS" -p "$pid" -o "$OUT/$phase-$name.syscalls.txt" -- sleep "$secs" >/dev/null 2>&1 &
		perfs+=($!)
	done
	sleep 0.3
	"$@" >"$OUT/$phase.out" 2>&1 || true
	for pid in "${perfs[@]}"; do wait "$pid" || true; done
	for name in 4over6d 4over6c; do
		perf report -q -i "$OUT/$phase-$name.data" --no-children --sort symbol --stdio -g none --percent-limit 1 \
			>"$OUT/$phase-$name.symbols.txt" 2>/dev/null || true
		perf report -q -i "$OUT/$phase-$name.data" --no-children --sort dso --stdio -g none \
			>"$OUT/$phase-$name.dso.txt" 2>/dev/null || true
		# Who pays: self time summed up the call chains, by the caller in our code.
		perf report -q -i "$OUT/$phase-$name.data" --children --sort symbol --stdio -g none --percent-limit 3 \
			>"$OUT/$phase-$name.children.txt" 2>/dev/null || true
		[[ -n $KEEP_DATA ]] || rm -f "$OUT/$phase-$name.data"
	done
	say "$phase: $(tail -3 "$OUT/$phase.out" | tr '\n' ' ')"
}

# ping_phase: pings at 10 ms to the server's inner address (100.64.0.1), as
# run.sh paces them. Counts each process's scheduler events and syscalls
# per ping (perf stat for as long as 200 pings run), then records every
# CPU's scheduler and syscall tracepoints for 50 more pings and cuts each
# ping into its hops (ping-hops.txt, by `report hops`: medians in µs; the
# tracing itself adds to every hop).
ping_phase() {
	local name n ev=sched:sched_switch,sched:sched_wakeup,raw_syscalls:sys_enter
	for sc in read write writev futex epoll_pwait nanosleep; do ev+=",syscalls:sys_enter_$sc"; done
	in_ns "$NS_C" ping -n -q -c 20 -i 0.05 -W 1 100.64.0.1 >/dev/null 2>&1 || true
	for name in 4over6d 4over6c; do
		pid_var=PID_$name
		perf stat -x, -e "$ev" -p "${!pid_var}" -o "$OUT/ping-$name.stat" -- \
			ip netns exec "$NS_C" ping -n -c 200 -i 0.01 -W 1 100.64.0.1 >"$OUT/ping-$name.out" 2>&1 || true
		n=$(grep -c 'bytes from' "$OUT/ping-$name.out" || true)
		awk -F, -v n="$n" 'n > 0 && $1 ~ /^[0-9]+$/ {printf "%-32s %8d  %5.1f per ping\n", $3, $1, $1 / n}' \
			"$OUT/ping-$name.stat" >"$OUT/ping-$name.txt"
	done
	perf record -q -a -e sched:sched_switch,sched:sched_wakeup,raw_syscalls:sys_enter,raw_syscalls:sys_exit \
		-o "$OUT/ping-trace.data" -- ip netns exec "$NS_C" ping -n -c 50 -i 0.01 -W 1 100.64.0.1 >/dev/null 2>&1 || true
	perf script -i "$OUT/ping-trace.data" -F comm,pid,tid,cpu,time,event,trace 2>/dev/null |
		go run ./scripts/bench/report hops -server "$PID_4over6d" -client "$PID_4over6c" >"$OUT/ping-hops.txt" || true
	[[ -n $KEEP_DATA ]] || rm -f "$OUT/ping-trace.data"
	say "ping: $(tail -1 "$OUT/ping-4over6d.out"); context switches per ping: $(awk '/sched_switch/ {print $3}' "$OUT/ping-4over6d.txt") (4over6d), $(awk '/sched_switch/ {print $3}' "$OUT/ping-4over6c.txt") (4over6c); hops in ping-hops.txt"
}

phase() {
	local name pid perfs=() n ev=sched:sched_switch,sched:sched_wakeup,raw_syscalls:sys_enter
	for sc in read write writev futex epoll_pwait nanosleep; do ev+=",syscalls:sys_enter_$sc"; done
	in_ns "$NS_C" ping -n -q -c 20 -i 0.05 -W 1 192.0.2.1 >/dev/null 2>&1 || true
	for name in 4over6d 4over6c; do
		pid_var=PID_$name
		perf stat -x, -e "$ev" -p "${!pid_var}" -o "$OUT/ping-$name.stat" -- sleep 3.5 >/dev/null 2>&1 &
		perfs+=($!)
	done
	sleep 0.2
	in_ns "$NS_C" ping -n -c 300 -i 0.01 -W 1 -w 3 192.0.2.1 >"$OUT/ping.out" 2>&1 || true
	for pid in "${perfs[@]}"; do wait "$pid" || true; done
	n=$(grep -c 'bytes from' "$OUT/ping.out" || true)
	for name in 4over6d 4over6c; do
		awk -F, -v n="$n" 'n > 0 && $1 ~ /^[0-9]+$/ {printf "%-32s %8d  %5.1f per ping\n", $3, $1, $1 / n}' \
			"$OUT/ping-$name.stat" >"$OUT/ping-$name.txt"
	done
	perf record -q -a -e sched:sched_switch,sched:sched_wakeup,raw_syscalls:sys_enter,raw_syscalls:sys_exit \
		-o "$OUT/ping-trace.data" -- sleep 1.5 >/dev/null 2>&1 &
	local rec=$!
	sleep 0.2
	in_ns "$NS_C" ping -n -c 50 -i 0.01 -W 1 192.0.2.1 >/dev/null 2>&1 || true
	wait "$rec" || true
	perf script -i "$OUT/ping-trace.data" -F comm,pid,tid,cpu,time,event,trace 2>/dev/null |
		go run ./scripts/bench/report hops -server "$PID_4over6d" -client "$PID_4over6c" >"$OUT/ping-hops.txt" || true
	[[ -n $KEEP_DATA ]] || rm -f "$OUT/ping-trace.data"
	say "ping: $(tail -1 "$OUT/ping.out"); per ping: $(awk '/sched_switch/ {print $3 " switches"}' "$OUT/ping-4over6d.txt") (4over6d), $(awk '/sched_switch/ {print $3 " switches"}' "$OUT/ping-4over6c.txt") (4over6c)"
}

phase() { [[ ",$PHASES," == *",$1,"* ]]; }

if phase ping; then
	say "counting what one idle ping costs each process"
	ping_phase
fi
if phase tcp-up; then
	say "profiling a TCP upload through the tunnel"
	profile tcp-up "$T" in_ns "$NS_C" iperf3 -c 198.51.100.2 -t $((T - 1))
fi
if phase tcp-down; then
	say "profiling a TCP download through the tunnel"
	profile tcp-down "$T" in_ns "$NS_C" iperf3 -c 198.51.100.2 -t $((T - 1)) -R
fi
if phase setup; then
	say "profiling $SESSIONS session setups"
	profile setup 6 in_ns "$NS_C" "$BIN/4over6-load" -server '[2001:db8:1::1]:5678' -n "$SESSIONS" -duration 2s -concurrency 256
fi
if phase idle; then
	say "profiling $SESSIONS idle sessions (heartbeats only) for 10 s"
	bench_start load-idle "$NS_C" "$BIN/4over6-load" -server '[2001:db8:1::1]:5678' -n "$SESSIONS" -duration 20s -concurrency 256
	wait_for 120 grep -q "setup done" "$BENCH_WORK/load-idle.log"
	sleep 3
	profile idle 10 sleep 9
	wait "$PID_load_idle" || true
fi
echo "profiles in $OUT" >&2
ls "$OUT" >&2
