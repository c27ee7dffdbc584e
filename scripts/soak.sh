#!/usr/bin/env bash
# Soak test (not run by CI): mixed traffic for a while with clients
# connecting and leaving at random, then a report of the server's memory
# and goroutines at the start and at the end (they must not grow).
#
#   sudo ./scripts/soak.sh            # 30 minutes, 6 clients
#   sudo ./scripts/soak.sh 120 4      # 120 seconds, 4 clients
#
# Namespaces are prefixed "soak-"; everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo $0" >&2; exit 1; }
DURATION=${1:-1800}
source scripts/deps.sh
LAB_PREFIX=soak- LAB_CLIENTS=${2:-6}
source scripts/lab.sh
lab_traps
declare -A CLIENT_PID

# sample prints the server's goroutines and resident memory.
sample() {
	in_ns "$NS_SERVER" curl -sS --max-time 5 http://127.0.0.1:9604/metrics |
		awk '/^go_goroutines /{g=$2} /^process_resident_memory_bytes /{r=$2} /^fourover6d_sessions /{s=$2}
		     /^go_memstats_heap_inuse_bytes /{h=$2}
		     END {printf "goroutines=%d heap_inuse_mib=%.1f rss_mib=%.1f sessions=%d\n", g, h/1048576, r/1048576, s}'
}

lab_build
lab_namespaces
lab_start_web
lab_start_server -pprof
for i in $(seq "$LAB_CLIENTS"); do
	lab_start_client "$i"
	CLIENT_PID[$i]=$LAB_LAST_PID
done
for i in $(seq "$LAB_CLIENTS"); do lab_wait_lease "$i" >/dev/null; done
sleep 2
heap() { in_ns "$NS_SERVER" curl -sS --max-time 5 -o "$1" "http://127.0.0.1:9604/debug/pprof/heap?gc=1"; }
HEAP_DIR=${HEAP_DIR:-/tmp}
heap "$HEAP_DIR/4over6d-soak-heap-start.pb.gz"
start_sample=$(sample)
step "start: $start_sample"

end=$((SECONDS + DURATION))
rounds=0 restarts=0 failures=0
while ((SECONDS < end)); do
	i=$((RANDOM % LAB_CLIENTS + 1))
	case $((RANDOM % 4)) in
	0) # a client leaves and comes back
		lab_stop_pid "${CLIENT_PID[$i]}"
		lab_start_client "$i"
		CLIENT_PID[$i]=$LAB_LAST_PID
		lab_wait_lease "$i" >/dev/null
		restarts=$((restarts + 1)) ;;
	1) in_ns "$(client_ns "$i")" ping -q -c 20 -i 0.05 -W 2 198.51.100.2 >/dev/null || failures=$((failures + 1)) ;;
	*) in_ns "$(client_ns "$i")" curl -sS --max-time 30 -o /dev/null http://198.51.100.2/file.bin || failures=$((failures + 1)) ;;
	esac
	rounds=$((rounds + 1))
done
# Every client started must be running still, one per namespace.
for i in $(seq "$LAB_CLIENTS"); do
	kill -0 "${CLIENT_PID[$i]}" || { echo "client $i died" >&2; exit 1; }
done
# Let every client reconnect and the server settle before the last sample.
for i in $(seq "$LAB_CLIENTS"); do lab_wait_lease "$i" >/dev/null; done
sleep 2
end_sample=$(sample)
heap "$HEAP_DIR/4over6d-soak-heap-end.pb.gz"
step "report after ${DURATION}s: $rounds rounds, $restarts client restarts, $failures failed transfers"
echo "start: $start_sample"
echo "end:   $end_sample"
echo "heap profiles: $HEAP_DIR/4over6d-soak-heap-{start,end}.pb.gz; growth by allocation site:"
go tool pprof -top -sample_index=inuse_space -nodecount=12 -base "$HEAP_DIR/4over6d-soak-heap-start.pb.gz" \
	"$BIN/4over6d" "$HEAP_DIR/4over6d-soak-heap-end.pb.gz" 2>/dev/null | tail -n +5 || true
