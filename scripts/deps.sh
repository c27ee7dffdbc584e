#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian/Ubuntu machine,
# only where it is missing: iproute2 (ip netns), nftables (inspection in
# tests), iputils-ping, util-linux (setpriv) and curl; with deps_browser=1
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
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
