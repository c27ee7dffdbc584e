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

# Run as root; from another user, through sudo when there is one.
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then exec sudo "$0" "$@"; fi
[[ $(id -u) -eq 0 ]] || { echo "run as root (there is no sudo here)" >&2; exit 1; }
source scripts/deps.sh
LAB_PREFIX="" LAB_CLIENTS=2
source scripts/lab.sh
lab_traps

lab_build
lab_namespaces
echo "client1: 2001:db8:1::11, client2: 2001:db8:1::12, server: 2001:db8:1::1 and 198.51.100.1, internet: 198.51.100.2"

step "starting the internet host (HTTP on 198.51.100.2:80, a page and a 10 MiB file)"
lab_start_web

step "starting 4over6d in the server namespace"
lab_start_server
cat "$WORK/server.log"

for i in 1 2; do
	step "starting 4over6c in client$i"
	lab_start_client "$i"
done
for i in 1 2; do
	printf 'client%s leased: %s\n' "$i" "$(lab_wait_lease "$i")"
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
