#!/usr/bin/env bash
# Shared by the end-to-end tests of the containerized labs
# (scripts/lab-test.sh, scripts/fleet-test.sh), which source it: install
# Docker from Debian packages when it is missing, start dockerd by hand
# with options that leave the host's firewall alone, and put the host
# back as it was afterwards (dockerd changes sysctls, iptables and links,
# and leaves them so when it exits). main_pid finds a container's main
# process for the tests that kill it.
#
# The caller defines pass, fail, abort (fail and exit), step and limit
# (sets T to the seconds left for a step, at most $1), and the variables
# LOGS (a log directory), START_WAIT (seconds dockerd gets to answer),
# DOCKERD_PID and HOST_SAVED (both empty at first; set here). Its EXIT
# trap calls docker_stop, also on failure.

# --- host state: saved before dockerd starts, put back after it stopped ---

SYSCTLS=(net/ipv4/ip_forward net/ipv6/conf/all/forwarding net/ipv6/conf/default/forwarding
	net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables)

# links lists the network interfaces dockerd may create and leave behind.
links() {
	local l
	for l in /sys/class/net/*; do
		l=${l##*/}
		[[ $l =~ ^(docker0|br-[0-9a-f]{12}|veth[0-9a-f]{7})$ ]] && printf '%s\n' "$l"
	done
	return 0
}
rules() {
	command -v "$1" >/dev/null 2>&1 || return 0
	"$1" 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]/[0:0]/'
}

save_host() {
	mkdir -p "$LOGS/host"
	local s
	for s in "${SYSCTLS[@]}"; do
		[[ -r /proc/sys/$s ]] && cat "/proc/sys/$s" >"$LOGS/host/${s//\//.}"
	done
	links >"$LOGS/host/links"
	rules iptables-save >"$LOGS/host/iptables"
	rules ip6tables-save >"$LOGS/host/ip6tables"
	HOST_SAVED=1
}

# restore_rules puts back the iptables tables dockerd changed: tables that
# existed are restored from the saved dump; tables it created are emptied
# and, with the nf_tables backend, deleted.
restore_rules() {
	local save=$1 restore=$2 cmd=$3 family=$4 saved=$5 t c
	[[ $(rules "$save") == "$(cat "$saved")" ]] && return 0
	echo "restoring $cmd rules changed while dockerd ran"
	[[ -s $saved ]] && "$restore" <"$saved"
	for t in $(rules "$save" | sed -n 's/^\*//p'); do
		grep -qx "\*$t" "$saved" && continue
		"$cmd" -t "$t" -F
		"$cmd" -t "$t" -X
		for c in $("$cmd" -t "$t" -S | sed -n 's/^-P \([A-Z]*\) .*/\1/p'); do
			"$cmd" -t "$t" -P "$c" ACCEPT
		done
		if [[ $("$cmd" -V) == *nf_tables* ]] && command -v nft >/dev/null 2>&1; then
			nft delete table "$family" "$t"
		fi
	done
}

restore_host() {
	local s want l
	for s in "${SYSCTLS[@]}"; do
		[[ -r $LOGS/host/${s//\//.} && -w /proc/sys/$s ]] || continue
		want=$(cat "$LOGS/host/${s//\//.}")
		if [[ $(cat "/proc/sys/$s") != "$want" ]]; then
			echo "restoring ${s//\//.} = $want"
			echo "$want" >"/proc/sys/$s"
		fi
	done
	restore_rules iptables-save iptables-restore iptables ip "$LOGS/host/iptables"
	restore_rules ip6tables-save ip6tables-restore ip6tables ip6 "$LOGS/host/ip6tables"
	for l in $(links); do
		grep -qx "$l" "$LOGS/host/links" && continue
		echo "deleting link $l left by dockerd"
		ip link delete "$l" 2>/dev/null || true
	done
}

# check_host compares the host with the saved state.
check_host() {
	local s diffs=()
	for s in "${SYSCTLS[@]}"; do
		[[ -r $LOGS/host/${s//\//.} ]] || continue
		[[ $(cat "/proc/sys/$s") == "$(cat "$LOGS/host/${s//\//.}")" ]] || diffs+=("${s//\//.}")
	done
	[[ $(links) == "$(cat "$LOGS/host/links")" ]] || diffs+=("links $(links | tr '\n' ' ')")
	[[ $(rules iptables-save) == "$(cat "$LOGS/host/iptables")" ]] || diffs+=(iptables)
	[[ $(rules ip6tables-save) == "$(cat "$LOGS/host/ip6tables")" ]] || diffs+=(ip6tables)
	if ((${#diffs[@]} == 0)); then
		pass "host state as before dockerd started (ip_forward=$(cat /proc/sys/net/ipv4/ip_forward), iptables, no docker0/br-*/veth* links)"
	else
		fail "host state differs after cleanup: ${diffs[*]}"
	fi
}

# open_host makes this host the worst case for the lab's isolation, for the
# length of the test: it forwards IPv4 and IPv6 between all interfaces
# (Docker's bridges included) and accepts everything in iptables' FORWARD
# chain, as a host with forwarding on and no firewall does. The lab must
# keep its clients off the IPv4 side by itself. restore_host puts back the
# sysctls and rules saved before.
open_host() {
	echo 1 >/proc/sys/net/ipv4/ip_forward
	echo 1 >/proc/sys/net/ipv6/conf/all/forwarding
	if command -v iptables >/dev/null 2>&1; then
		iptables -P FORWARD ACCEPT && ip6tables -P FORWARD ACCEPT ||
			abort "failed to set the host's FORWARD policy to ACCEPT"
	fi
	echo "host opened for the test: ip_forward=1, IPv6 forwarding=1, FORWARD policy ACCEPT (restored at the end)"
}

# main_pid prints the host PID of the container's main process: the
# oldest child of docker-init (init: true), found through /proc so no ps
# is needed. Not just any child: orphans of processes run by docker exec
# (busybox timeout's timer, in the healthchecks) are reparented to it too.
main_pid() {
	local init f line fields pid best="" best_start=0
	init=$(docker inspect -f '{{.State.Pid}}' "$1") || return 1
	for f in /proc/[0-9]*/stat; do
		read -r line <"$f" 2>/dev/null || continue
		# Fields 3 on, after the command name: [1] is the parent (field
		# 4), [19] the start time (field 22).
		read -ra fields <<<"${line##*) }"
		[[ ${fields[1]} == "$init" ]] || continue
		pid=${f#/proc/}
		pid=${pid%/stat}
		if [[ -z $best ]] || ((fields[19] < best_start)); then
			best=$pid best_start=${fields[19]}
		fi
	done
	[[ -n $best ]] || return 1
	printf '%s
' "$best"
}

# docker_install installs Docker, compose and make from Debian packages
# where they are missing; no service starts during the install.
docker_install() {
	local pkgs=() guard apt_rc
	have_compose() { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; }
	command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io containerd runc iptables)
	command -v docker >/dev/null 2>&1 || [[ " ${pkgs[*]} " == *" docker.io "* ]] || pkgs+=(docker.io)
	have_compose || pkgs+=(docker-compose)
	command -v make >/dev/null 2>&1 || pkgs+=(make)
	if ((${#pkgs[@]})); then
		command -v apt-get >/dev/null 2>&1 || abort "Docker is missing and there is no apt-get to install it"
		echo "installing: ${pkgs[*]}"
		guard=""
		if [[ ! -e /usr/sbin/policy-rc.d ]]; then
			# Keep the packages from starting dockerd with its default options.
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 0755 /usr/sbin/policy-rc.d
			guard=1
		fi
		export DEBIAN_FRONTEND=noninteractive
		limit 240
		timeout "$T" apt-get update -qq >"$LOGS/apt.log" 2>&1 &&
			timeout "$T" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>"$LOGS/apt.log" 2>&1
		apt_rc=$?
		[[ -n $guard ]] && rm -f /usr/sbin/policy-rc.d
		if ((apt_rc != 0)); then
			tail -n 20 "$LOGS/apt.log"
			abort "apt-get install ${pkgs[*]} failed (exit $apt_rc)"
		fi
		pass "installed ${pkgs[*]} from Debian packages"
	fi
}

# docker_start starts dockerd, unless an engine already answers (then it
# is used as it is: not stopped, host state not checked), after saving the
# host state, and opens the host for the test (open_host).
docker_start() {
	local i how
	if timeout 10 docker info >/dev/null 2>&1; then
		echo "a Docker engine is already running: using it as it is (not stopped, host state not checked)"
	else
		save_host
		echo "starting dockerd, log $LOGS/dockerd.log"
		setsid dockerd --storage-driver=overlay2 --iptables=false --ip-forward=false --bridge=none \
			>"$LOGS/dockerd.log" 2>&1 </dev/null &
		DOCKERD_PID=$!
		for ((i = 0; i < START_WAIT * 5; i++)); do
			timeout 5 docker info >/dev/null 2>&1 && break
			kill -0 "$DOCKERD_PID" 2>/dev/null || break
			sleep 0.2
		done
		if ! timeout 5 docker info >/dev/null 2>&1; then
			echo "--- dockerd log (last 30 lines)"
			tail -n 30 "$LOGS/dockerd.log"
			how="exited"
			kill -0 "$DOCKERD_PID" 2>/dev/null && how="no answer within ${START_WAIT}s" || DOCKERD_PID=""
			abort "the Docker engine did not start ($how): $(grep -E 'level=(error|fatal)|failed to start' "$LOGS/dockerd.log" | tail -n 1)"
		fi
		# setsid may have forked: the daemon's own pidfile names the process.
		[[ -r /var/run/docker.pid ]] && DOCKERD_PID=$(cat /var/run/docker.pid)
		echo "dockerd PID $DOCKERD_PID"
		open_host
	fi
	pass "Docker engine $(docker version -f '{{.Server.Version}}' 2>/dev/null) answers"
}

# docker_stop stops the dockerd that docker_start started, by its PID, then
# puts the host back and checks it. For the caller's EXIT trap.
docker_stop() {
	if [[ -n $DOCKERD_PID ]]; then
		step "stopping dockerd (PID $DOCKERD_PID)"
		kill -TERM "$DOCKERD_PID" 2>/dev/null
		local i
		for ((i = 0; i < 60; i++)); do
			kill -0 "$DOCKERD_PID" 2>/dev/null || break
			sleep 0.5
		done
		if kill -0 "$DOCKERD_PID" 2>/dev/null; then
			kill -KILL "$DOCKERD_PID" 2>/dev/null
			fail "dockerd did not stop within 30s of SIGTERM; killed"
		else
			pass "dockerd stopped"
		fi
		DOCKERD_PID=""
	fi
	if [[ -n $HOST_SAVED ]]; then
		restore_host
		check_host
	fi
}
