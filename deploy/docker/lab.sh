#!/usr/bin/env bash
# Runs the containerized lab (docker-compose.yml) with whichever compose is
# installed: compose v2 (`docker compose`) or Debian's compose v1 1.29
# (`docker-compose`).
#
#   deploy/docker/lab.sh up          # up -d, then wait until every container is healthy
#   deploy/docker/lab.sh down        # down -v: containers, networks and volumes
#   deploy/docker/lab.sh compose ... # any compose command, e.g. `compose ps`
#
# `make lab` and `make lab-down` call it; `make fleet` and `make fleet-down`
# call it with LAB_COMPOSE_FILE=docker-compose.fleet.yml (a path from the
# repository root), which selects that file and its own compose project
# (LAB_PROJECT, default: the file's name without docker-compose. and .yml,
# prefixed 4over6d-), so that neither takes the other's containers for
# orphans. Compose v2 waits with `up --wait`; compose v1 has no --wait,
# so the health of the containers is polled here, up to LAB_WAIT seconds
# (default 180). A container that keeps exiting fails the wait at once,
# with its logs.
set -euo pipefail
cd "$(dirname "$0")/../.."

LAB_WAIT=${LAB_WAIT:-180}

die() { printf 'lab: %s\n' "$*" >&2; exit 1; }

if docker compose version >/dev/null 2>&1; then
	COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
	COMPOSE=(docker-compose)
else
	die "neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed (Debian: apt-get install docker-compose)"
fi

if [[ -n ${LAB_COMPOSE_FILE:-} ]]; then
	[[ -r $LAB_COMPOSE_FILE ]] || die "LAB_COMPOSE_FILE: no such file: $LAB_COMPOSE_FILE"
	name=$(basename "$LAB_COMPOSE_FILE" .yml)
	name=${name#docker-compose.}
	COMPOSE+=(-f "$LAB_COMPOSE_FILE" -p "${LAB_PROJECT:-4over6d-$name}")
fi

compose() { "${COMPOSE[@]}" "$@"; }

# states prints "service=state" for every container of the lab, where state
# is the health status, or the container status when it is not running or
# has no healthcheck, followed by ",restarts=N" once Docker restarted it.
states() {
	local ids
	ids=$(compose ps -q)
	[[ -n $ids ]] || return 0
	# shellcheck disable=SC2086
	docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}={{if and .State.Running .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}{{if .RestartCount}},restarts={{.RestartCount}}{{end}}' $ids | sort
}

# show_unhealthy prints the last log lines of every container that is not
# healthy.
show_unhealthy() {
	local w
	for w in $(states); do
		case $w in *=healthy | *=healthy,*) continue ;; esac
		echo "--- ${w}: last log lines" >&2
		compose logs --no-color --tail 20 "${w%%=*}" >&2 || true
	done
}

# wait_healthy polls until every container is healthy (or running, without
# a healthcheck), printing each change of the states. A container that
# exited for good, or that Docker restarted 3 times during the wait, fails
# it at once.
wait_healthy() {
	local start=$SECONDS last="" now n_services name count
	local -A base=()
	n_services=$(compose config --services | wc -l)
	echo "waiting up to ${LAB_WAIT}s for ${n_services} containers to be healthy"
	while :; do
		now=$(states | tr '\n' ' ')
		if [[ $now != "$last" ]]; then
			printf '  %3ds  %s\n' $((SECONDS - start)) "$now"
			last=$now
		fi
		local words ok=0 w
		read -ra words <<<"$now"
		for w in "${words[@]}"; do
			name=${w%%=*}
			count=0
			[[ $w == *,restarts=* ]] && count=${w##*,restarts=}
			[[ -n ${base[$name]:-} ]] || base[$name]=$count
			case $w in
			*=healthy | *=healthy,* | *=running | *=running,*) ok=$((ok + 1)) ;;
			*=exited* | *=dead*)
				echo "lab: $name exited; its last log lines:" >&2
				compose logs --no-color --tail 20 "$name" >&2 || true
				return 1
				;;
			*)
				if ((count - base[$name] >= 3)); then
					echo "lab: $name keeps exiting (restarted $((count - base[$name])) times); its last log lines:" >&2
					compose logs --no-color --tail 20 "$name" >&2 || true
					return 1
				fi
				;;
			esac
		done
		if ((${#words[@]} == n_services && ok == n_services)); then
			echo "lab is up: all ${n_services} containers healthy after $((SECONDS - start))s"
			return 0
		fi
		if ((SECONDS - start >= LAB_WAIT)); then
			echo "lab: not healthy after ${LAB_WAIT}s: $now" >&2
			show_unhealthy
			return 1
		fi
		sleep 1
	done
}

case ${1:-} in
up)
	echo "using ${COMPOSE[*]} ($(compose version --short 2>/dev/null || echo unknown version))"
	if [[ ${COMPOSE[0]} == docker && ${COMPOSE[1]:-} == compose ]] && docker compose up --help 2>/dev/null | grep -q -- '--wait'; then
		timeout_flag=()
		if docker compose up --help 2>/dev/null | grep -q -- '--wait-timeout'; then
			timeout_flag=(--wait-timeout "$LAB_WAIT")
		fi
		if ! compose up -d --wait "${timeout_flag[@]}"; then
			echo "lab: not healthy: $(states | tr '\n' ' ')" >&2
			show_unhealthy
			exit 1
		fi
		wait_healthy
	else
		compose up -d
		wait_healthy
	fi
	compose ps
	;;
down)
	compose down -v -t 2 --remove-orphans
	;;
compose)
	shift
	compose "$@"
	;;
*)
	echo "usage: $0 up|down|compose ARGS..." >&2
	exit 2
	;;
esac
