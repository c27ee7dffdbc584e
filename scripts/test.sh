#!/usr/bin/env bash
# The full test suite, as CI runs it: installs missing tools, checks
# formatting and vet, then runs every test with the race detector. Run it
# as root: the end-to-end tests create network namespaces, TUN devices and
# nftables tables (all removed again). As root, a test that would skip for
# lack of privileges fails instead, so nothing is counted as passing unrun.
set -euo pipefail
# As another user, re-run through sudo when there is one (no sudo: the
# namespace tests are skipped with a warning below).
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1 && [[ -z ${FOUR6_NO_SUDO:-} ]]; then
	exec sudo "$0" "$@"
fi
cd "$(dirname "$0")/.."
deps_browser=1 # Chromium for the dashboard's browser tests
source scripts/deps.sh

if [[ $(id -u) -eq 0 ]]; then
	export FOUR6_REQUIRE_ROOT_TESTS=1
else
	echo "warning: not root: namespace end-to-end tests will be skipped (run with sudo)" >&2
fi

go mod download
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n $unformatted ]]; then
	echo "gofmt needed on:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
go test -race -count=1 -timeout 15m -v ./... >"$log" 2>&1
status=$?
set -e
grep -E '^(--- (FAIL|SKIP)|ok |FAIL|panic:)' "$log" || true
if ((status != 0)); then
	echo "--- failure output ---"
	grep -B2 -A40 -E '^(--- FAIL|panic:)' "$log" | head -400
	exit "$status"
fi
if [[ $(id -u) -eq 0 ]] && grep -q -- '--- SKIP' "$log"; then
	echo "tests were skipped on a root run; that counts as a failure here" >&2
	exit 1
fi
passed=$(grep -c -E '^\s*--- PASS' "$log" || true)

# The README's first command must keep working: run the demo lab as a smoke
# test (it cleans up after itself; it needs root).
if [[ $(id -u) -eq 0 ]]; then
	if timeout 300 bash scripts/demo.sh >"$log" 2>&1; then
		echo "--- PASS: demo lab (scripts/demo.sh)"
		passed=$((passed + 1))
	else
		tail -40 "$log"
		echo "--- FAIL: demo lab (scripts/demo.sh)"
		echo "$passed passed, 1 failed"
		exit 1
	fi
fi

# container_test runs one of the Docker end-to-end scripts ($2) as a
# check named $1; on failure its whole output is shown.
container_test() {
	if bash "$2" >"$log" 2>&1; then
		echo "--- PASS: $1 ($2)"
		passed=$((passed + 1))
	else
		cat "$log"
		echo "--- FAIL: $1 ($2)"
		echo "$passed passed, 1 failed"
		exit 1
	fi
}

# The containerized lab (Docker from Debian packages, started and stopped by
# the script, host state restored).
if [[ $(id -u) -eq 0 ]]; then
	container_test "containerized lab" scripts/lab-test.sh
fi

# The containerized fleet (3 etcd members, 3 nodes, 3 clients; Docker as
# above; about 1.5 minutes).
if [[ $(id -u) -eq 0 ]]; then
	container_test "containerized fleet" scripts/fleet-test.sh
fi

# A short smoke run of the benchmark suite (every case must produce its
# numbers; nothing is written to the docs).
if [[ $(id -u) -eq 0 ]]; then
	if timeout 600 bash scripts/bench/run.sh --smoke >"$log" 2>&1; then
		echo "--- PASS: benchmark smoke (scripts/bench/run.sh --smoke)"
		passed=$((passed + 1))
	else
		tail -60 "$log"
		echo "--- FAIL: benchmark smoke (scripts/bench/run.sh --smoke)"
		echo "$passed passed, 1 failed"
		exit 1
	fi
fi
echo "$passed passed, 0 failed"
