#!/usr/bin/env bash
# Builds the containerized lab's images with no image registry, as
# `make images` does:
#
#   1. static Go binaries (CGO_ENABLED=0) of 4over6d, 4over6c and 4over6-web;
#   2. a root filesystem with Debian's busybox-static and its applet links
#      (sh, ping, wget, sha256sum, ip, ...) for healthchecks and tests: the
#      .deb is fetched with `apt-get download` (nothing is installed on the
#      host) and cached in bin/docker-cache/, or BUSYBOX=/path/to/busybox
#      names a static busybox to use instead;
#   3. three FROM scratch images from deploy/docker/Dockerfile with the
#      classic builder: 4over6d-server, 4over6d-client and 4over6d-web,
#      tagged $TAG (default lab).
#
# The build context is bin/docker/ (ignored by git), rebuilt on every run.
set -euo pipefail
cd "$(dirname "$0")/../.."

TAG=${TAG:-lab}
CTX=bin/docker
CACHE=bin/docker-cache
TARGETS=(server client web)

step() { printf '==> %s\n' "$*"; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed"
if ! command -v go >/dev/null 2>&1; then
	for d in /usr/local/go/bin /usr/lib/go/bin; do [[ -x $d/go ]] && PATH="$d:$PATH"; done
fi
command -v go >/dev/null 2>&1 || die "Go is not installed (need Go 1.25+)"

# static_busybox prints the path of a statically linked busybox, fetching
# Debian's busybox-static package into the cache on first use.
static_busybox() {
	local bb=${BUSYBOX:-$CACHE/busybox}
	if [[ -z ${BUSYBOX:-} && ! -x $bb ]]; then
		command -v apt-get >/dev/null 2>&1 ||
			die "no apt-get to fetch busybox-static: set BUSYBOX=/path/to/a/static/busybox"
		local tmp
		tmp=$(mktemp -d)
		# apt's download sandbox user must be able to write here.
		chmod 0777 "$tmp"
		if ! (cd "$tmp" && apt-get download busybox-static >/dev/null 2>&1); then
			[[ $(id -u) -eq 0 ]] || { rm -rf "$tmp"; die "apt-get download busybox-static failed (run as root to allow apt-get update, or set BUSYBOX)"; }
			apt-get update -qq >/dev/null
			(cd "$tmp" && apt-get download busybox-static >/dev/null) || { rm -rf "$tmp"; die "apt-get download busybox-static failed"; }
		fi
		dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/root"
		mkdir -p "$CACHE"
		cp "$tmp/root/bin/busybox" "$bb"
		rm -rf "$tmp"
	fi
	[[ -x $bb ]] || die "$bb is not an executable"
	# A dynamically linked ELF names its loader (ld-linux, ld-musl) in its
	# first page; FROM scratch has no loader.
	if head -c 4096 "$bb" | LC_ALL=C grep -qa '/ld-'; then
		die "$bb is dynamically linked: FROM scratch images need a static busybox (Debian: busybox-static)"
	fi
	printf '%s\n' "$bb"
}

step "static binaries (CGO_ENABLED=0) into $CTX/"
rm -rf "$CTX"
mkdir -p "$CTX/rootfs/bin" "$CTX/rootfs/tmp"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$CTX/" ./cmd/4over6d ./cmd/4over6c ./cmd/4over6-web

bb=$(static_busybox)
step "root filesystem: $bb with its applet links"
cp "$bb" "$CTX/rootfs/bin/busybox"
chmod 0755 "$CTX/rootfs/bin/busybox"
chmod 1777 "$CTX/rootfs/tmp"
applets=0
for a in $("$CTX/rootfs/bin/busybox" --list); do
	[[ $a == busybox ]] && continue
	ln -s busybox "$CTX/rootfs/bin/$a"
	applets=$((applets + 1))
done
for need in sh ping wget sha256sum ip head cut; do
	[[ -L $CTX/rootfs/bin/$need ]] || die "this busybox has no $need applet"
done
echo "$applets applets"

for t in "${TARGETS[@]}"; do
	step "image 4over6d-$t:$TAG (FROM scratch, classic builder)"
	# -q prints the image ID; the classic builder's deprecation notice is
	# shown only if the build fails.
	if ! out=$(DOCKER_BUILDKIT=0 docker build -q -f deploy/docker/Dockerfile --target "$t" -t "4over6d-$t:$TAG" "$CTX" 2>&1); then
		printf '%s\n' "$out" >&2
		die "docker build of 4over6d-$t failed"
	fi
	printf '%s\n' "$out" | tail -n 1
done
docker image ls --filter "reference=4over6d-*:$TAG"
