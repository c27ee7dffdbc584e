# Shared by demo.sh and soak.sh: builds and removes a namespace lab.
#
#   client1..N ─┐ IPv6 2001:db8:1::/64          IPv4 198.51.100.0/24
#               ├── bridge ── server (4over6d) ──────────────────── internet (HTTP)
#
# Set LAB_PREFIX (namespace name prefix) and LAB_CLIENTS before sourcing.
# Functions fail the calling script on error (it runs with set -e).

LAB_PREFIX=${LAB_PREFIX:-}
LAB_CLIENTS=${LAB_CLIENTS:-2}
BIN=${BIN:-$PWD/bin}
LAB_PIDS=()
LAB_CREATED=()

NS_INET=${LAB_PREFIX}internet
NS_SERVER=${LAB_PREFIX}server
client_ns() { echo "${LAB_PREFIX}client$1"; }

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# lab_cleanup stops every process the lab started (by PID) and deletes the
# namespaces it created, nothing else. It fails if a process outlived
# SIGTERM (it is then killed), so a leak cannot go unnoticed.
lab_cleanup() {
	local pid leaked=0
	for pid in "${LAB_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${LAB_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	for pid in "${LAB_PIDS[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			echo "process $pid survived SIGTERM; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
			leaked=1
		fi
	done
	for ns in "${LAB_CREATED[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
	echo "stopped ${#LAB_PIDS[@]} processes; removed namespaces: ${LAB_CREATED[*]:-none}"
	return "$leaked"
}

# lab_traps makes a work directory ($WORK) and tears the lab down on any
# exit, including Ctrl-C; a process that outlives the teardown fails the
# script.
lab_traps() {
	WORK=$(mktemp -d)
	trap lab_exit EXIT
	trap 'exit 130' INT TERM
}

lab_exit() {
	local rc=$?
	trap - EXIT INT TERM
	step "tearing down"
	lab_cleanup || rc=1
	rm -rf "$WORK"
	exit "$rc"
}

lab_build() {
	step "building 4over6d, 4over6c and 4over6-web"
	mkdir -p "$BIN"
	go build -o "$BIN/" ./cmd/4over6d ./cmd/4over6c ./cmd/4over6-web
}

lab_namespaces() {
	local all=("$NS_INET" "$NS_SERVER") i ns
	for i in $(seq "$LAB_CLIENTS"); do all+=("$(client_ns "$i")"); done
	for ns in "${all[@]}"; do
		if ip netns list | grep -qw "^$ns"; then
			echo "namespace $ns already exists; remove it first (ip netns del $ns)" >&2
			return 1
		fi
	done
	step "creating namespaces ${all[*]}"
	for ns in "${all[@]}"; do
		ip netns add "$ns"
		LAB_CREATED+=("$ns")
		in_ns "$ns" ip link set lo up
	done
	ip link add s-inet netns "$NS_SERVER" type veth peer name inet0 netns "$NS_INET"
	in_ns "$NS_SERVER" ip addr add 198.51.100.1/24 dev s-inet
	in_ns "$NS_INET" ip addr add 198.51.100.2/24 dev inet0
	in_ns "$NS_SERVER" ip link set s-inet up
	in_ns "$NS_INET" ip link set inet0 up
	in_ns "$NS_SERVER" ip route add default via 198.51.100.2
	in_ns "$NS_SERVER" ip link add br6 type bridge
	in_ns "$NS_SERVER" ip addr add 2001:db8:1::1/64 dev br6 nodad
	in_ns "$NS_SERVER" ip link set br6 up
	for i in $(seq "$LAB_CLIENTS"); do
		ns=$(client_ns "$i")
		ip link add "s-c$i" netns "$NS_SERVER" type veth peer name eth0 netns "$ns"
		in_ns "$NS_SERVER" ip link set "s-c$i" master br6 up
		in_ns "$ns" ip addr add "2001:db8:1::$(printf %x $((16 + i)))/64" dev eth0 nodad
		in_ns "$ns" ip link set eth0 up
	done
}

# lab_stop_pid stops one process the lab started and forgets its PID, so
# the final cleanup never signals a PID that the system has reused.
lab_stop_pid() {
	local pid=$1 keep=() p
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for p in "${LAB_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
	LAB_PIDS=("${keep[@]}")
}

# lab_start_web and lab_start_server run the internet host and 4over6d;
# extra arguments go to 4over6d. Processes are started with `ip netns exec`
# directly (not through a shell function), so $! is the PID of the program
# itself (ip execs it) and stopping it by that PID works.
lab_start_web() {
	ip netns exec "$NS_INET" "$BIN/4over6-web" -listen 198.51.100.2:80 >"$WORK/web.log" 2>&1 &
	LAB_PIDS+=($!)
}

lab_start_server() {
	ip netns exec "$NS_SERVER" "$BIN/4over6d" -listen '[::]:5678' -pool 192.0.2.0/24 -dns 198.51.100.53 "$@" >"$WORK/server.log" 2>&1 &
	LAB_PIDS+=($!)
	for _ in $(seq 100); do grep -q "4over6d serving" "$WORK/server.log" && return 0; sleep 0.1; done
	cat "$WORK/server.log" >&2
	return 1
}

# lab_start_client i: runs 4over6c in client i; its PID is left in
# LAB_LAST_PID (call it directly, not in a command substitution, which
# would run it in a subshell).
lab_start_client() {
	ip netns exec "$(client_ns "$1")" "$BIN/4over6c" -server '[2001:db8:1::1]:5678' >>"$WORK/client$1.log" 2>&1 &
	LAB_LAST_PID=$!
	LAB_PIDS+=($!)
}

# lab_wait_lease i: waits for client i's TUN address and prints it.
lab_wait_lease() {
	local ns
	ns=$(client_ns "$1")
	for _ in $(seq 100); do
		in_ns "$ns" ip -4 -o addr show dev 4over6c 2>/dev/null | grep -q inet && break
		sleep 0.1
	done
	in_ns "$ns" ip -4 -o addr show dev 4over6c | awk '{print $4}'
}
