#!/usr/bin/env bash
# End-to-end test of the containerized lab (docker-compose.yml), as CI runs
# it (as root, on a machine that may have no Docker):
#
#   1. installs Docker from Debian packages if it is missing (services are
#      kept from starting by a temporary policy-rc.d);
#   2. starts dockerd by hand, with its own log file, and options that leave
#      the host's firewall to us: --iptables=false --ip-forward=false
#      --bridge=none (the lab needs no NAT from Docker: its NAT is 4over6d's,
#      inside the server container); an engine that cannot start fails the
#      test with the daemon's error. Then it opens the host for the length
#      of the test (forwarding on, FORWARD policy ACCEPT), the worst case for
#      the lab's isolation;
#   3. `make lab` (tunnel port published on FOUR6_PORT, default here
#      127.0.0.1:15678), then from inside each client: the leased address,
#      the route through the tunnel, no IPv4 way around it, no way to the
#      admin endpoint (through the tunnel or over v6net), ping to the
#      internet host and the server's TUN address, a 10 MiB HTTP download
#      checked against /file.bin.sha256; a 100 from the host through the
#      published tunnel port gets a 101;
#   4. restarts the server container, then kills the server's process: both
#      clients must come back by themselves; kills a client's process: Docker
#      must restart it and it must lease the same IPv4 address again;
#   5. `make lab-down`, stops dockerd by its PID, puts back anything on the
#      host that differs from before dockerd started (sysctls, iptables,
#      docker0/br-* links), and checks the host state. Also on failure.
#
# Prints PASS/FAIL lines and ends with "N passed, M failed"; exits 1 if any
# check failed. Logs: /tmp/4over6d-lab-test/ (removed when all passed).
set -uo pipefail
# Run as root; from another user, through sudo when there is one.
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then exec sudo "$0" "$@"; fi
cd "$(dirname "$0")/.." || exit 1

LOGS=/tmp/4over6d-lab-test
WEB=198.51.100.20
# The server's admin endpoint inside the lab, and its TUN address.
ADMIN=198.51.100.10:9604
SERVER_TUN=192.0.2.1
# The tunnel port is published on the host's loopback only here, on a port
# unlikely to be taken, so that the test opens nothing to the network; a
# FOUR6_PORT from the caller wins.
export FOUR6_PORT=${FOUR6_PORT:-127.0.0.1:15678}
CLIENTS=(client1 client2)
# Bounds, in seconds: each wait, and BUDGET for everything before the
# cleanup (at most about 2 minutes more), so the whole script stays
# under 10 minutes even when every step runs into its timeout.
START_WAIT=30
LAB_TIMEOUT=300
RECOVER_WAIT=60
BUDGET=450

DOCKERD_PID=""
HOST_SAVED=""
WHAT=lab
# pass, fail, step, abort, limit, check_cleanup (the EXIT trap), UP.
# shellcheck source=scripts/compose-check.sh
source scripts/compose-check.sh

lab() { ./deploy/docker/lab.sh "$@"; }
cid() { lab compose ps -q "$1" 2>/dev/null; }
# in_ctr runs a command in a container, bounded in time.
in_ctr() {
	local c=$1 T
	shift
	limit 60
	timeout "$T" docker exec "$c" "$@"
}
# lease prints the IPv4 address on the client's TUN, or nothing.
lease() {
	local out
	out=$(timeout 10 docker exec "$1" ip -4 -o addr show dev 4over6c 2>/dev/null) || return 0
	out=${out#*inet }
	printf '%s\n' "${out%%/*}"
}
restarts() { docker inspect -f '{{.RestartCount}}' "$1" 2>/dev/null; }
# tunnel_ok reports whether a client reaches the internet host through the
# tunnel right now.
tunnel_ok() { timeout 5 docker exec "$1" ping -c 1 -W 2 "$WEB" >/dev/null 2>&1; }
# all_back waits until every client reaches the internet host, up to
# RECOVER_WAIT seconds.
all_back() {
	local c ok T deadline
	limit "$RECOVER_WAIT"
	deadline=$((SECONDS + T))
	while ((SECONDS < deadline)); do
		ok=0
		for c in "${CLIENTS[@]}"; do
			tunnel_ok "$(cid "$c")" && ok=$((ok + 1))
		done
		((ok == ${#CLIENTS[@]})) && return 0
		sleep 1
	done
	return 1
}
# http_get prints the body of a GET to the host's loopback port, using
# bash's /dev/tcp so the host needs no curl.
http_get() {
	local host=$1 port=$2 path=$3
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$2" "$0" >&3 && cat <&3' "$host" "$port" "$path" 2>/dev/null
}

# unreachable reports whether a client's HTTP GET of URL fails (the drop
# of a SYN has no event to wait for: 4 s without an answer counts).
unreachable() { ! timeout 8 docker exec "$1" timeout 4 wget -q -O /dev/null "$2" >/dev/null 2>&1; }
# handshake sends a 100 (address request) to host:port from the host and
# prints the type of the first frame that comes back (101 expected), using
# bash's /dev/tcp.
handshake() {
	local out
	# shellcheck disable=SC2016 # expanded by the inner bash
	out=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "\x05\x00\x00\x00\x64" >&3 && head -c 5 <&3 | od -An -tu1' "$1" "$2" 2>/dev/null)
	out=${out%"${out##*[0-9]}"}
	printf '%s\n' "${out##* }"
}

# --- 1. Docker (installed if missing, started; the cleanup trap set) ---

check_begin

# --- 2. the lab ---

step "make lab"
./deploy/docker/lab.sh down >/dev/null 2>&1 || true
UP=1
t0=$SECONDS
limit "$LAB_TIMEOUT"
if timeout "$T" make lab; then
	pass "make lab: images built, 4 containers healthy ($((SECONDS - t0))s)"
else
	abort "make lab failed after $((SECONDS - t0))s (limit ${T}s): see its output above"
fi
server=$(cid server)
[[ -n $server ]] || abort "no server container"

step "admin endpoint"
port=$(docker port "$server" 9604/tcp 2>/dev/null)
if [[ $port == "127.0.0.1:9604" ]]; then
	pass "admin port published on the host's loopback only ($port)"
else
	fail "admin port published as '${port//$'\n'/ }', want 127.0.0.1:9604 only"
fi
if [[ $(http_get 127.0.0.1 9604 /healthz) == *ok* ]]; then
	pass "GET http://127.0.0.1:9604/healthz from the host answers ok"
else
	fail "GET http://127.0.0.1:9604/healthz from the host failed"
fi
if http_get 198.51.100.1 9604 /healthz >/dev/null; then
	fail "the admin port answers on the host's address 198.51.100.1, not only on loopback"
else
	pass "the admin port is closed on the host's non-loopback address 198.51.100.1"
fi

# --- 3. traffic through the tunnel ---

declare -A leased
for c in "${CLIENTS[@]}"; do
	step "$c"
	id=$(cid "$c")
	leased[$c]=$(lease "$id")
	route=$(in_ctr "$id" ip route get "$WEB" 2>&1)
	if [[ -n ${leased[$c]} && $route == *"dev 4over6c"* ]]; then
		pass "$c leased ${leased[$c]} and routes $WEB through the tunnel"
	else
		fail "$c: lease '${leased[$c]}', route to $WEB: $route"
	fi
	if in_ctr "$id" ping -c 1 -W 2 -I eth0 "$WEB" >/dev/null 2>&1; then
		fail "$c reaches $WEB outside the tunnel (ping -I eth0)"
	else
		pass "$c cannot reach $WEB outside the tunnel (ping -I eth0)"
	fi
	eth0=$(in_ctr "$id" ip -4 -o addr show dev eth0 2>&1)
	if [[ -z $eth0 ]]; then
		pass "$c: eth0 has no IPv4 address (the lab removes the one Docker gives it)"
	else
		fail "$c: eth0 still has IPv4: $eth0"
	fi
	if in_ctr "$id" ping -c 1 -W 2 "$SERVER_TUN" >/dev/null; then
		pass "$c: ping to the server's TUN address $SERVER_TUN answers"
	else
		fail "$c: no answer to ping from the server's TUN address $SERVER_TUN"
	fi
	for url in "http://$SERVER_TUN:9604/healthz" "http://$ADMIN/healthz" "http://[2001:db8:10::10]:9604/healthz"; do
		if unreachable "$id" "$url"; then
			pass "$c cannot reach the admin endpoint at $url"
		else
			fail "$c reaches the admin endpoint at $url"
		fi
	done
	if in_ctr "$id" ping -c 3 -W 2 "$WEB"; then
		pass "$c: ping $WEB through the tunnel"
	else
		fail "$c: ping $WEB through the tunnel"
	fi
	page=$(in_ctr "$id" wget -q -O - "http://$WEB/" 2>&1)
	if [[ $page == *"You are 198.51.100.10:"* ]]; then
		pass "$c: the internet host sees the request from the server's v4net address 198.51.100.10 (NAT out of v4net)"
	else
		fail "$c: the page from $WEB: ${page:-nothing}"
	fi
	t0=$SECONDS
	got=$(in_ctr "$id" sh -c "wget -q -O - http://$WEB/file.bin | sha256sum" 2>&1)
	want=$(in_ctr "$id" wget -q -O - "http://$WEB/file.bin.sha256" 2>&1)
	got=${got%% *} want=${want%% *}
	if [[ ${#want} -eq 64 && $got == "$want" ]]; then
		pass "$c: /file.bin (10 MiB) over HTTP in $((SECONDS - t0))s, sha256 $got matches"
	else
		fail "$c: /file.bin sha256 '$got', /file.bin.sha256 says '$want'"
	fi
done

step "server status"
limit 20
status=$(timeout "$T" ./deploy/docker/lab.sh compose exec -T server 4over6d status -admin "$ADMIN" -token-file /var/lib/4over6d/admin-token 2>&1)
printf '%s\n' "$status"
if [[ $status == *"sessions: ${#CLIENTS[@]}"* ]]; then
	pass "4over6d status in the server container lists ${#CLIENTS[@]} sessions"
else
	fail "4over6d status does not list ${#CLIENTS[@]} sessions"
fi

step "the tunnel port, published on the host"
port=$(docker port "$server" 5678/tcp 2>/dev/null)
want=$FOUR6_PORT
[[ $want == *:* ]] || want=0.0.0.0:$want
if [[ $port == *"$want"* ]]; then
	pass "tunnel port published as FOUR6_PORT says ($port)"
else
	fail "tunnel port published as '${port//$'\n'/ }', FOUR6_PORT=$FOUR6_PORT"
fi
addr=${want%:*} p=${want##*:}
[[ $addr == 0.0.0.0 ]] && addr=127.0.0.1
got=$(handshake "$addr" "$p")
if [[ $got == 101 ]]; then
	pass "a client on the host gets a 101 through the published port $addr:$p"
else
	fail "a 100 sent to the published port $addr:$p got '${got:-nothing}', want a 101"
fi

# --- 4. supervision ---

step "restart the server container"
t0=$SECONDS
limit 60
if timeout "$T" docker restart -t 5 "$server" >/dev/null && all_back; then
	pass "server container restarted: both clients reconnected by themselves ($((SECONDS - t0))s)"
else
	fail "after a server restart, the clients did not all reach $WEB within $((RECOVER_WAIT))s"
fi

step "kill the server's process"
before=$(restarts "$server")
pid=$(main_pid "$server")
comm=$(cat "/proc/$pid/comm" 2>/dev/null)
if [[ $comm == 4over6d ]]; then
	t0=$SECONDS
	kill -KILL "$pid"
	if all_back && (($(restarts "$server") > before)); then
		pass "server process killed: Docker restarted it (restarts $before -> $(restarts "$server")), both clients back ($((SECONDS - t0))s)"
	else
		fail "server process killed: restarts $before -> $(restarts "$server"), clients not all back within ${RECOVER_WAIT}s"
	fi
else
	fail "the server container's main process is '$comm' (PID $pid), not 4over6d"
fi

step "kill a client's process"
c=client1
id=$(cid "$c")
addr=$(lease "$id")
before=$(restarts "$id")
pid=$(main_pid "$id")
comm=$(cat "/proc/$pid/comm" 2>/dev/null)
if [[ $comm == 4over6c && -n $addr ]]; then
	echo "$c has $addr; killing 4over6c (host PID $pid)"
	t0=$SECONDS
	kill -KILL "$pid"
	limit "$RECOVER_WAIT"
	deadline=$((SECONDS + T))
	now=""
	while ((SECONDS < deadline)); do
		if (($(restarts "$id") > before)); then
			now=$(lease "$id")
			[[ -n $now ]] && tunnel_ok "$id" && break
		fi
		sleep 0.5
	done
	if [[ $now == "$addr" ]] && tunnel_ok "$id"; then
		pass "$c process killed: Docker restarted it (restarts $before -> $(restarts "$id")) and it leased $now again ($((SECONDS - t0))s)"
	else
		fail "$c process killed: restarts $before -> $(restarts "$id"), address before $addr, after '${now}'"
	fi
else
	fail "$c: main process '$comm' (PID $pid), address '$addr': cannot run the kill test"
fi

# --- 5. down ---

step "make lab-down"
((failed > 0)) && timeout 30 ./deploy/docker/lab.sh compose logs --no-color >"$LOGS/compose.log" 2>&1
project=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$server" 2>/dev/null)
limit 60
if timeout "$T" make lab-down && [[ -n $project ]] &&
	[[ -z $(docker ps -aq --filter "label=com.docker.compose.project=$project") ]] &&
	[[ -z $(docker network ls -q --filter "label=com.docker.compose.project=$project") ]]; then
	UP=""
	pass "make lab-down removed the lab's containers and networks"
else
	fail "make lab-down left containers or networks"
fi
