#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian/Ubuntu machine,
# only where it is missing: iproute2 (ip netns), nftables (inspection in
# tests), iputils-ping, util-linux (setpriv), curl, and Debian's etcd
# (etcd-server: the real 3-member cluster the fleet tests start; etcd-client:
# etcdctl, for a human looking into one); with deps_browser=1
# set before sourcing (scripts/test.sh and stress.sh, which run the
# dashboard's browser tests) also Chromium, which the labs do not need
# (about 30 s and 25 packages with apt). Go itself must be present
# (https://go.dev/dl/), as the README says.
set -euo pipefail

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need ip iproute2
need nft nftables
need ping iputils-ping
need setpriv util-linux
need curl curl
need etcd etcd-server
need etcdctl etcd-client
if [[ ${deps_browser:-} == 1 ]] && [[ ! -x /usr/lib/chromium/chromium ]]; then
	need chromium chromium
fi

if ((${#missing[@]})); then
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "missing tools and no apt-get to install them: ${missing[*]}" >&2
		exit 1
	fi
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# etcd-server's postinst starts an etcd daemon (its init script through
	# invoke-rc.d, or its systemd unit) that nothing here wants: the tests
	# start their own members in namespaces. invoke-rc.d and
	# deb-systemd-invoke ask /usr/sbin/policy-rc.d first, and exit 101
	# means "do not start", so one is put in place for the install when the
	# machine has none (Docker's Debian images ship one that does the same;
	# in a container without an init, invoke-rc.d finds no runlevel and
	# starts nothing anyway, but a machine booted with sysvinit would run it).
	# On a machine with systemd the unit is still enabled for the next boot
	# (`systemctl disable --now etcd` turns it off).
	policy=/usr/sbin/policy-rc.d
	own_policy=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\n# scripts/deps.sh: no service starts during its install\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		own_policy=1
	fi
	apt_status=0
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || apt_status=$?
	if [[ -n $own_policy ]]; then
		rm -f "$policy"
	fi
	if ((apt_status != 0)); then
		echo "apt-get install failed (status $apt_status): ${missing[*]}" >&2
		exit "$apt_status"
	fi
fi

if ! command -v go >/dev/null 2>&1; then
	for d in /usr/local/go/bin /usr/lib/go/bin; do
		[[ -x $d/go ]] && export PATH="$d:$PATH"
	done
fi
command -v go >/dev/null 2>&1 || { echo "Go is not installed (need Go 1.25+: https://go.dev/dl/)" >&2; exit 1; }
# go.mod's go line is the oldest Go the code builds with (sync.WaitGroup.Go
# needs 1.25); an older go command would try to download a toolchain.
go_have=$(go env GOVERSION | sed -E 's/^go([0-9]+)\.([0-9]+).*/\1 \2/')
read -r go_major go_minor <<<"$go_have"
if ((go_major < 1 || (go_major == 1 && go_minor < 25))); then
	echo "Go $(go env GOVERSION) is too old: need Go 1.25+ (https://go.dev/dl/)" >&2
	exit 1
fi
