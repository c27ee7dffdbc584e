#!/usr/bin/env bash
# End-to-end test of the containerized fleet (docker-compose.fleet.yml:
# 3 etcd members, nodes n1-n3, client1-client3, the internet host), as CI
# runs it (as root, on a machine that may have no Docker):
#
#   1. Docker as scripts/lab-test.sh has it (scripts/docker-host.sh):
#      installed from Debian packages if missing, dockerd started by hand
#      with --iptables=false --ip-forward=false --bridge=none, the host
#      opened for the length of the test (forwarding on, FORWARD ACCEPT);
#   2. `make fleet` (images with etcd, then everything healthy), then:
#      every node sees all three registered in etcd (`4over6d status
#      -fleet` inside each node), each client leased an address (all
#      distinct) from the node it lists first, routes IPv4 through the
#      tunnel and pings the internet host, cannot reach its node's admin
#      endpoint, and pings every other client: on another node, through
#      the nodes' VXLAN (the node routes the address into 4o6vx);
#   3. stops client2's node (docker stop): client2 moves to the next node
#      in its list with the same address, pings the internet host and the
#      other clients again; the stopped node is gone from the fleet; it
#      starts again and rejoins. Then kills (-9) the 4over6d of the node
#      client2 moved to: its clients come back on the other nodes with
#      their addresses, Docker restarts it and it rejoins the fleet;
#   4. `make fleet-down`: no container, network or volume of the fleet's
#      compose project remains; stops dockerd by its PID and puts back
#      anything on the host that differs from before it started. Also on
#      failure.
#
# Prints PASS/FAIL lines and ends with "N passed, M failed"; exits 1 if any
# check failed. Logs: /tmp/4over6d-fleet-test/ (removed when all passed).
# The fleet uses the lab's networks: the two do not run at the same time.
set -uo pipefail
# Run as root; from another user, through sudo when there is one.
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then exec sudo "$0" "$@"; fi
cd "$(dirname "$0")/.." || exit 1

LOGS=/tmp/4over6d-fleet-test
WEB=198.51.100.20
export LAB_COMPOSE_FILE=docker-compose.fleet.yml
PROJECT=4over6d-fleet
export LAB_PROJECT=$PROJECT
NODES=(n1 n2 n3)
CLIENTS=(client1 client2 client3)
# The fabric addresses of the nodes and clients (docker-compose.fleet.yml).
declare -A V6=([n1]=2001:db8:10::10 [n2]=2001:db8:10::13 [n3]=2001:db8:10::14
	[client1]=2001:db8:10::21 [client2]=2001:db8:10::22 [client3]=2001:db8:10::23)
declare -A V4=([n1]=198.51.100.10 [n2]=198.51.100.13 [n3]=198.51.100.14)
# The node each client lists first, and the one it moves to when that
# node stops.
declare -A FIRST=([client1]=n1 [client2]=n2 [client3]=n3)
MOVER=client2
NEXT=n3
# The node killed (kill -9) after that: the one the mover went to.
VICTIM=n3
# Bounds, in seconds: each wait, and BUDGET for everything before the
# cleanup (at most about 2 minutes more), so the whole script stays
# under 10 minutes even when every step runs into its timeout. A client
# whose node stopped first retries it (a 10 s dial timeout) before it
# moves on.
START_WAIT=30
FLEET_TIMEOUT=300
RECOVER_WAIT=90
BUDGET=480

DOCKERD_PID=""
HOST_SAVED=""
WHAT=fleet
# pass, fail, step, abort, limit, check_cleanup (the EXIT trap), UP.
# shellcheck source=scripts/compose-check.sh
source scripts/compose-check.sh

fleet() { ./deploy/docker/lab.sh "$@"; }
# cid prints a service's container ID: from IDS, filled once the fleet is
# up (IDs stay across stop, start and restarts; compose v1 takes half a
# second to answer), else from compose.
declare -A IDS
cid() {
	if [[ -n ${IDS[$1]:-} ]]; then
		printf '%s\n' "${IDS[$1]}"
	else
		fleet compose ps -q "$1" 2>/dev/null
	fi
}
# in_ctr runs a command in a service's container, bounded in time.
in_ctr() {
	local s=$1 T
	shift
	limit 60
	timeout "$T" docker exec "$(cid "$s")" "$@"
}
# lease prints the IPv4 address on the client's TUN, or nothing.
lease() {
	local out
	out=$(timeout 10 docker exec "$(cid "$1")" ip -4 -o addr show dev 4over6c 2>/dev/null) || return 0
	[[ $out == *inet* ]] || return 0
	out=${out#*inet }
	printf '%s\n' "${out%%/*}"
}
# fleet_status prints `4over6d status -fleet` as node $1 sees it.
fleet_status() { timeout 20 docker exec "$(cid "$1")" 4over6d status -fleet 2>&1; }
# node_of prints the running node that has a session from client $1 with
# address $2, or nothing.
node_of() {
	local n
	for n in "${NODES[@]}"; do
		[[ $(docker inspect -f '{{.State.Running}}' "$(cid "$n")" 2>/dev/null) == true ]] || continue
		if timeout 20 docker exec "$(cid "$n")" 4over6d status 2>/dev/null |
			grep -F "[${V6[$1]}]:" | grep -qw -- "$2"; then
			printf '%s\n' "$n"
			return 0
		fi
	done
	return 0
}
# listed reports whether a `status -fleet` output ($1) lists node $2 at
# its fabric address.
listed() { grep -qE "^[ *] $2 +${V6[$2]} " <<<"$1"; }
ping_ok() { timeout 10 docker exec "$(cid "$1")" ping -c 1 -W 2 "$2" >/dev/null 2>&1; }
# unreachable reports whether a client's HTTP GET of URL fails (the drop
# of a SYN has no event to wait for: 4 s without an answer counts).
unreachable() { ! timeout 8 docker exec "$(cid "$1")" timeout 4 wget -q -O /dev/null "$2" >/dev/null 2>&1; }
# overlay_route reports whether node $1 routes address $2 into the VXLAN.
overlay_route() { [[ $(timeout 10 docker exec "$(cid "$1")" ip route get "$2" 2>&1) == *"dev 4o6vx"* ]]; }

# --- 1. Docker (installed if missing, started; the cleanup trap set) ---

check_begin

# --- 2. the fleet ---

step "make fleet"
./deploy/docker/lab.sh down >/dev/null 2>&1 || true
UP=1
t0=$SECONDS
limit "$FLEET_TIMEOUT"
if timeout "$T" make fleet; then
	pass "make fleet: images built, $(fleet compose config --services | wc -l) containers healthy ($((SECONDS - t0))s)"
else
	abort "make fleet failed after $((SECONDS - t0))s (limit ${T}s): see its output above"
fi
for s in "${NODES[@]}" "${CLIENTS[@]}"; do
	IDS[$s]=$(cid "$s")
	[[ -n ${IDS[$s]} ]] || abort "no container for $s"
done

step "every node registered in etcd"
for n in "${NODES[@]}"; do
	st=$(fleet_status "$n")
	missing=()
	for m in "${NODES[@]}"; do listed "$st" "$m" || missing+=("$m"); done
	if [[ $st == *"state: ok"* && $st == *"this node: $n"* && $st == *"nodes: ${#NODES[@]}"* && ${#missing[@]} -eq 0 ]]; then
		pass "$n: status -fleet shows state ok and all ${#NODES[@]} nodes at their fabric addresses"
	else
		printf '%s\n' "$st"
		fail "$n: status -fleet: missing ${missing[*]:-none}"
	fi
done
printf '%s\n' "$(fleet_status n1)"

declare -A leased on
for c in "${CLIENTS[@]}"; do
	step "$c"
	leased[$c]=$(lease "$c")
	on[$c]=$(node_of "$c" "${leased[$c]:-none}")
	if [[ -n ${leased[$c]} && ${on[$c]} == "${FIRST[$c]}" ]]; then
		pass "$c leased ${leased[$c]} from ${on[$c]}, the node it lists first"
	else
		fail "$c: lease '${leased[$c]}' on node '${on[$c]}', want one from ${FIRST[$c]}"
	fi
	route=$(in_ctr "$c" ip route get "$WEB" 2>&1)
	if [[ $route == *"dev 4over6c"* ]] && ! in_ctr "$c" ping -c 1 -W 2 -I eth0 "$WEB" >/dev/null 2>&1; then
		pass "$c routes $WEB through the tunnel and has no way around it (ping -I eth0 fails)"
	else
		fail "$c: route to $WEB: $route, or it reaches it outside the tunnel"
	fi
	if in_ctr "$c" ping -c 3 -W 2 "$WEB"; then
		pass "$c: ping $WEB through the tunnel"
	else
		fail "$c: ping $WEB through the tunnel"
	fi
	n=${FIRST[$c]}
	for url in "http://[${V6[$n]}]:9604/healthz" "http://${V4[$n]}:9604/healthz"; do
		if unreachable "$c" "$url"; then
			pass "$c cannot reach its node's admin port at $url"
		else
			fail "$c reaches its node's admin port at $url"
		fi
	done
done

step "distinct addresses"
count=$(printf '%s\n' "${leased[@]}" | grep -c . | tr -d ' ')
dups=$(printf '%s\n' "${leased[@]}" | grep . | sort | uniq -d | tr '\n' ' ')
if ((count == ${#CLIENTS[@]})) && [[ -z $dups ]]; then
	pass "the ${#CLIENTS[@]} clients have distinct addresses: ${leased[*]}"
else
	fail "client addresses: ${leased[*]} (duplicates: ${dups:-none})"
fi

# c2c pings every other client from $1 and checks that $1's node routes
# the peer's address into the VXLAN when the peer is on another node.
c2c() {
	local c=$1 o
	for o in "${CLIENTS[@]}"; do
		[[ $o == "$c" ]] && continue
		if [[ -z ${leased[$o]} || -z ${on[$c]} || -z ${on[$o]} ]]; then
			fail "$c -> $o: no address or node known ($c on '${on[$c]}', $o '${leased[$o]}' on '${on[$o]}')"
			continue
		fi
		if [[ ${on[$c]} != "${on[$o]}" ]] && ! overlay_route "${on[$c]}" "${leased[$o]}"; then
			fail "$c -> $o: ${on[$c]} does not route ${leased[$o]} (on ${on[$o]}) through 4o6vx: $(in_ctr "${on[$c]}" ip route get "${leased[$o]}" 2>&1)"
			continue
		fi
		if in_ctr "$c" ping -c 2 -W 2 "${leased[$o]}" >/dev/null; then
			pass "$c (${on[$c]}) -> $o (${on[$o]}): ping ${leased[$o]}$([[ ${on[$c]} != "${on[$o]}" ]] && echo ' across nodes through VXLAN')"
		else
			fail "$c (${on[$c]}) -> $o (${on[$o]}): no answer from ${leased[$o]}"
		fi
	done
}

step "client to client across nodes"
for c in "${CLIENTS[@]}"; do c2c "$c"; done

# --- 3. a node stops ---

down=${FIRST[$MOVER]}
step "stop $down, the node of $MOVER"
before=${leased[$MOVER]}
t0=$SECONDS
limit 30
timeout "$T" docker stop -t 10 "$(cid "$down")" >/dev/null || fail "docker stop $down failed"
limit "$RECOVER_WAIT"
deadline=$((SECONDS + T))
now="" where=""
while ((SECONDS < deadline)); do
	now=$(lease "$MOVER")
	if [[ -n $now ]] && ping_ok "$MOVER" "$WEB"; then
		where=$(node_of "$MOVER" "$now")
		[[ -n $where ]] && break
	fi
	sleep 1
done
if [[ -n $where && $where != "$down" && $now == "$before" ]]; then
	pass "$MOVER moved from $down to $where with the same address $now and pings $WEB ($((SECONDS - t0))s)"
elif [[ -n $where && $where != "$down" ]]; then
	fail "$MOVER moved from $down to $where but has $now, not its address $before"
else
	fail "$MOVER not back within ${RECOVER_WAIT}s: address '$now', node '$where'"
fi
[[ $where == "$NEXT" ]] || echo "note: $MOVER is on '$where', its list's next node is $NEXT"
leased[$MOVER]=$now
on[$MOVER]=$where

for n in "${NODES[@]}"; do
	[[ $n == "$down" ]] && continue
	st=$(fleet_status "$n")
	if [[ $st == *"nodes: $((${#NODES[@]} - 1))"* ]] && ! listed "$st" "$down"; then
		pass "$n: $down has left the fleet (status -fleet lists $((${#NODES[@]} - 1)) nodes)"
	else
		printf '%s\n' "$st"
		fail "$n: status -fleet still lists $down or not the others"
	fi
	break
done

step "client to client after the move"
for c in "${CLIENTS[@]}"; do
	[[ $c == "$MOVER" ]] && continue
	l=$(lease "$c")
	[[ $l == "${leased[$c]}" ]] || fail "$c's address changed while $down stopped: ${leased[$c]} -> '$l'"
done
c2c "$MOVER"

step "start $down again"
t0=$SECONDS
limit 30
timeout "$T" docker start "$(cid "$down")" >/dev/null || fail "docker start $down failed"
limit "$RECOVER_WAIT"
deadline=$((SECONDS + T))
st=""
while ((SECONDS < deadline)); do
	st=$(fleet_status "$down")
	[[ $st == *"nodes: ${#NODES[@]}"* ]] && break
	sleep 1
done
if [[ $st == *"state: ok"* && $st == *"nodes: ${#NODES[@]}"* ]] && listed "$st" "$down"; then
	pass "$down rejoined: status -fleet on it lists all ${#NODES[@]} nodes ($((SECONDS - t0))s)"
else
	printf '%s\n' "$st"
	fail "$down did not rejoin the fleet within ${RECOVER_WAIT}s"
fi

step "kill -9 the 4over6d of $VICTIM"
# The clients on it move to the other nodes and, once its etcd lease has
# run out (-etcd-ttl, 10 s), have their addresses back there; Docker
# restarts it, and it registers again when the old record is gone.
movers=()
for c in "${CLIENTS[@]}"; do [[ ${on[$c]} == "$VICTIM" ]] && movers+=("$c"); done
id=$(cid "$VICTIM")
before=$(docker inspect -f '{{.RestartCount}}' "$id")
pid=$(main_pid "$id")
comm=$(cat "/proc/$pid/comm" 2>/dev/null)
if [[ $comm == 4over6d && ${#movers[@]} -gt 0 ]]; then
	echo "$VICTIM has ${movers[*]}; killing 4over6d (host PID $pid)"
	t0=$SECONDS
	kill -KILL "$pid"
	limit "$RECOVER_WAIT"
	deadline=$((SECONDS + T))
	while ((SECONDS < deadline)); do
		back=0
		for c in "${movers[@]}"; do
			now=$(lease "$c")
			[[ $now == "${leased[$c]}" ]] && ping_ok "$c" "$WEB" && [[ -n $(node_of "$c" "$now") ]] && back=$((back + 1))
		done
		((back == ${#movers[@]})) && break
		sleep 1
	done
	for c in "${movers[@]}"; do
		now=$(lease "$c")
		where=$(node_of "$c" "$now")
		if [[ $now == "${leased[$c]}" && -n $where ]] && ping_ok "$c" "$WEB"; then
			pass "$c back on $where with its address $now after $VICTIM was killed ($((SECONDS - t0))s)"
			on[$c]=$where
		else
			fail "$c after $VICTIM was killed: address '$now' (had ${leased[$c]}), node '$where', or no ping to $WEB"
		fi
	done
	deadline=$((SECONDS + T))
	st=""
	while ((SECONDS < deadline)); do
		st=$(fleet_status "$VICTIM")
		[[ $st == *"state: ok"* && $st == *"nodes: ${#NODES[@]}"* ]] && break
		sleep 1
	done
	after=$(docker inspect -f '{{.RestartCount}}' "$id")
	if ((after > before)) && [[ $st == *"state: ok"* && $st == *"nodes: ${#NODES[@]}"* ]] && listed "$st" "$VICTIM"; then
		pass "$VICTIM: Docker restarted it (restarts $before -> $after) and it rejoined the fleet ($((SECONDS - t0))s)"
	else
		printf '%s
' "$st"
		fail "$VICTIM: restarts $before -> $after, not back in the fleet within ${RECOVER_WAIT}s"
	fi
	c2c "${movers[0]}"
else
	fail "$VICTIM: main process '$comm' (PID $pid), clients on it: '${movers[*]}': cannot run the kill test"
fi

# --- 4. down ---

step "make fleet-down"
((failed > 0)) && timeout 30 ./deploy/docker/lab.sh compose logs --no-color >"$LOGS/compose.log" 2>&1
limit 60
label="label=com.docker.compose.project=$PROJECT"
if timeout "$T" make fleet-down; then
	left=$(
		docker ps -aq --filter "$label"
		docker network ls -q --filter "$label"
		docker volume ls -q --filter "$label"
	)
	if [[ -z $left ]]; then
		UP=""
		pass "make fleet-down removed the fleet's containers, networks and volumes"
	else
		fail "make fleet-down left: $(tr '\n' ' ' <<<"$left")"
	fi
else
	fail "make fleet-down failed"
fi
