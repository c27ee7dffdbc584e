#!/usr/bin/env bash
# The demo lab: a whole 4over6 network on this machine, in network
# namespaces, with real traffic through the tunnel.
#
#   client1 ─┐ IPv6 2001:db8:1::/64          IPv4 198.51.100.0/24
#            ├── bridge ── server (4over6d) ──────────────────── internet (HTTP)
#   client2 ─┘  (4over6c in each client)      NAT of 192.0.2.0/24
#
# Run as root. It builds the binaries, creates the namespaces internet,
# server, client1 and client2 (it refuses to touch namespaces that already
# exist), shows each step, and removes everything it created on exit,
# including on Ctrl-C. Documentation address ranges only.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo $0" >&2; exit 1; }
source scripts/deps.sh

NS=(internet server client1 client2)
BIN=$PWD/bin
WORK=$(mktemp -d)
PIDS=()
CREATED=()

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	step "tearing down"
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	for ns in "${CREATED[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$WORK"
	echo "removed namespaces: ${CREATED[*]:-none}"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "${NS[@]}"; do
	if ip netns list | grep -qw "^$ns"; then
		echo "namespace $ns already exists; remove it first (ip netns del $ns) or pick another machine" >&2
		exit 1
	fi
done

step "building 4over6d, 4over6c and 4over6-web"
mkdir -p "$BIN"
go build -o "$BIN/" ./cmd/4over6d ./cmd/4over6c ./cmd/4over6-web
ls -l "$BIN"

step "creating namespaces ${NS[*]}"
for ns in "${NS[@]}"; do
	ip netns add "$ns"
	CREATED+=("$ns")
	in_ns "$ns" ip link set lo up
done
# server <-> internet: IPv4 only.
ip link add s-inet netns server type veth peer name inet0 netns internet
in_ns server ip addr add 198.51.100.1/24 dev s-inet
in_ns internet ip addr add 198.51.100.2/24 dev inet0
in_ns server ip link set s-inet up
in_ns internet ip link set inet0 up
in_ns server ip route add default via 198.51.100.2
# clients <-> server: IPv6 only, over a bridge in the server namespace.
in_ns server ip link add br6 type bridge
in_ns server ip addr add 2001:db8:1::1/64 dev br6 nodad
in_ns server ip link set br6 up
for i in 1 2; do
	ip link add "s-c$i" netns server type veth peer name eth0 netns "client$i"
	in_ns server ip link set "s-c$i" master br6 up
	in_ns "client$i" ip addr add "2001:db8:1::1$i/64" dev eth0 nodad
	in_ns "client$i" ip link set eth0 up
	in_ns "client$i" sysctl -qw net.ipv4.conf.all.forwarding=0
done
echo "client1: 2001:db8:1::11, client2: 2001:db8:1::12, server: 2001:db8:1::1 and 198.51.100.1, internet: 198.51.100.2"

step "starting the internet host (HTTP on 198.51.100.2:80, a page and a 10 MiB file)"
in_ns internet "$BIN/4over6-web" -listen 198.51.100.2:80 >"$WORK/web.log" 2>&1 &
PIDS+=($!)

step "starting 4over6d in the server namespace"
in_ns server "$BIN/4over6d" -listen '[::]:5678' -pool 192.0.2.0/24 -dns 198.51.100.53 >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do grep -q "4over6d serving" "$WORK/server.log" && break; sleep 0.1; done
cat "$WORK/server.log"

for i in 1 2; do
	step "starting 4over6c in client$i"
	in_ns "client$i" "$BIN/4over6c" -server '[2001:db8:1::1]:5678' >"$WORK/client$i.log" 2>&1 &
	PIDS+=($!)
done
for i in 1 2; do
	for _ in $(seq 100); do in_ns "client$i" ip -4 -o addr show dev 4over6c 2>/dev/null | grep -q inet && break; sleep 0.1; done
	printf 'client%s leased: %s\n' "$i" "$(in_ns "client$i" ip -4 -o addr show dev 4over6c | awk '{print $4}')"
	in_ns "client$i" ip -4 route show dev 4over6c | sed 's/^/    route: /'
done

for i in 1 2; do
	step "client$i: ping the IPv4 internet host 198.51.100.2 through the tunnel"
	in_ns "client$i" ping -c 3 -W 2 198.51.100.2
done

step "client1: the internet host's page"
in_ns client1 curl -sS --max-time 10 http://198.51.100.2/

step "client2: download the 10 MiB file through the tunnel and verify its checksum"
in_ns client2 curl -sS --max-time 60 -o "$WORK/file.bin" -w 'downloaded %{size_download} bytes at %{speed_download} bytes/s\n' http://198.51.100.2/file.bin
want=$(in_ns client1 curl -sS --max-time 10 http://198.51.100.2/file.bin.sha256 | awk '{print $1}')
got=$(sha256sum "$WORK/file.bin" | awk '{print $1}')
echo "expected sha256 $want"
echo "received sha256 $got"
[[ $want == "$got" ]] || { echo "CHECKSUM MISMATCH" >&2; exit 1; }
echo "checksum OK"

step "the server's sessions (4over6d status)"
in_ns server "$BIN/4over6d" status

step "the demo worked: two IPv6-only clients reached the IPv4 internet through 4over6d"
