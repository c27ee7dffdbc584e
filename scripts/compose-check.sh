# shellcheck shell=bash
# The check harness that scripts/lab-test.sh and scripts/fleet-test.sh
# share (sourced, not run): PASS/FAIL counting, a time budget, and the
# cleanup that takes the compose project down, stops dockerd and prints
# the summary. The caller sets LOGS, BUDGET and WHAT (what is up, for the
# messages), calls check_begin, and sets UP=1 once `make` has started the
# project (and UP="" when it took it down itself).

# Docker and the host state: docker_install, docker_start, docker_stop.
# shellcheck source=scripts/docker-host.sh
source scripts/docker-host.sh

passed=0
failed=0
UP=""

pass() { printf 'PASS: %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; failed=$((failed + 1)); }
step() { printf '\n==> %s\n' "$*"; }
# abort records a failure that makes the remaining checks pointless.
abort() {
	fail "$*"
	exit 1
}

# limit sets T to $1 or the seconds left of BUDGET, whichever is less, and
# aborts once the budget is spent.
limit() {
	T=$((BUDGET - SECONDS))
	((T > $1)) && T=$1
	((T > 0)) || abort "time budget of ${BUDGET}s spent"
}

# check_cleanup is the EXIT trap: the project down (its logs kept when a
# check failed), dockerd stopped and the host put back, the summary.
check_cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $UP ]]; then
		step "cleaning up the $WHAT"
		((failed > 0)) && timeout 30 ./deploy/docker/lab.sh compose logs --no-color >"$LOGS/compose.log" 2>&1
		timeout 60 ./deploy/docker/lab.sh down >/dev/null 2>&1 || echo "$WHAT down failed" >&2
	fi
	docker_stop
	((failed > 0 || rc != 0)) && echo "logs: $LOGS"
	((failed == 0 && rc == 0)) && rm -rf "$LOGS"
	echo
	echo "$passed passed, $failed failed ($SECONDS s)"
	((failed > 0)) && exit 1
	exit "$rc"
}

# check_begin sets the cleanup trap, checks for root, makes LOGS afresh,
# and installs (if missing) and starts Docker.
check_begin() {
	trap check_cleanup EXIT
	trap 'exit 130' INT TERM
	[[ $(id -u) -eq 0 ]] || { echo "run as root (there is no sudo here)" >&2; exit 1; }
	rm -rf "$LOGS"
	mkdir -p "$LOGS"
	step "Docker"
	docker_install
	docker_start
}
