#!/usr/bin/env bash
# Flake hunt (issue #13, not run by CI): runs the test suite N times in a
# row with the race detector while a busy loop holds one core, so timing
# assumptions that only hold on an idle machine show up as failures.
#
#   sudo ./scripts/stress.sh                 # 10 runs of go test -race ./...
#   sudo ./scripts/stress.sh 3               # 3 runs
#   sudo ./scripts/stress.sh -n 20 -run 'TestPool' ./actors
#   sudo ./scripts/stress.sh -t 5m ./tun     # per-run go test -timeout 5m
#
# Arguments after the options go to go test as they are; without a package
# argument (./..., ./x, or a github.com/ path) ./... is tested. Each run
# prints PASS or FAIL with the names of the failing tests; the logs of
# failing runs are kept in a temporary directory whose path is printed. The
# exit status is 1 if any run failed. As root, FOUR6_REQUIRE_ROOT_TESTS=1 is
# set as in scripts/test.sh, and a skipped test fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
	echo "usage: $0 [-n RUNS | RUNS] [-t TIMEOUT (e.g. 15m, 90s)] [go test args...]" >&2
	exit 2
}

runs=10
per_run_timeout=15m
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
	runs=$1
	shift
fi
while (($#)); do
	case $1 in
	-n)
		[[ ${2:-} =~ ^[0-9]+$ ]] || usage
		runs=$2
		shift 2
		;;
	-t)
		[[ ${2:-} =~ ^[0-9]+[smh]$ ]] || usage
		per_run_timeout=$2
		shift 2
		;;
	-h | --help) usage ;;
	*) break ;;
	esac
done
((runs > 0)) || usage

args=("$@")
have_pkg=0
for a in "${args[@]}"; do
	[[ $a == ./* || $a == github.com/* ]] && have_pkg=1
done
((have_pkg)) || args+=(./...)

deps_browser=1 # Chromium for the dashboard's browser tests
source scripts/deps.sh
if [[ $(id -u) -eq 0 ]]; then
	export FOUR6_REQUIRE_ROOT_TESTS=1
else
	echo "warning: not root: namespace end-to-end tests will be skipped (run with sudo)" >&2
fi

logdir=$(mktemp -d -t 4over6d-stress.XXXXXX)
busy= run=
cleanup() {
	# Only the processes this script started, by PID: the busy loop and
	# the timeout(1) of the current run (which passes the signal on to go
	# test).
	for pid in $run $busy; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT
interrupted() {
	echo "stress: interrupted; logs in $logdir (a test killed mid-run skips its cleanup: check ip netns list)" >&2
	exit 130
}
trap interrupted INT TERM

# The backstop for a whole run: twice the per-package timeout.
backstop=$((${per_run_timeout%?} * 2))${per_run_timeout: -1}

# Build every test binary once (run through true, so no test runs): a
# compile error stops here instead of failing every run.
if ! go test -race -count=1 -exec true "${args[@]}" >"$logdir/build.log" 2>&1; then
	cat "$logdir/build.log" >&2
	echo "stress: build failed (log $logdir/build.log)" >&2
	exit 1
fi
rm -f "$logdir/build.log"

# One process spinning on one of the cores: the tests get the rest.
bash -c 'while :; do :; done' &
busy=$!
echo "stress: $runs runs of go test -race -count=1 -timeout $per_run_timeout ${args[*]} (busy loop pid $busy; failing logs kept in $logdir)"

passed=0
for ((i = 1; i <= runs; i++)); do
	log=$logdir/run-$i.log
	start=$SECONDS
	set +e
	# The outer timeout is a backstop for a hang outside any test binary
	# (go test's own -timeout covers each package).
	# It runs in the background so that a signal to this script is acted
	# on at once (bash defers traps while a foreground command runs).
	timeout --kill-after=30s "$backstop" \
		go test -race -count=1 -timeout "$per_run_timeout" -v "${args[@]}" >"$log" 2>&1 &
	run=$!
	wait "$run"
	status=$?
	run=
	set -e
	took=$((SECONDS - start))
	if ((status == 0)) && [[ $(id -u) -eq 0 ]] && grep -q -- '--- SKIP' "$log"; then
		status=1
	fi
	if ((status == 0)); then
		passed=$((passed + 1))
		rm -f "$log"
		echo "run $i/$runs: PASS (${took}s)"
		continue
	fi
	echo "run $i/$runs: FAIL (${took}s, exit $status, log $log)"
	{
		grep -E -- '--- (FAIL|SKIP):' "$log" | sed -E 's/^\s+//; s/ \([0-9.]+s\)$//'
		grep -E '^(panic: |FAIL\s|fatal error: )' "$log"
	} | sort -u | sed 's/^/    /' || true
done

echo "stress: $passed of $runs runs passed"
if ((passed == runs)); then
	rmdir "$logdir" 2>/dev/null || true
	exit 0
fi
echo "stress: logs of the failing runs: $logdir"
exit 1
