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
#   3. FROM scratch images from deploy/docker/Dockerfile with the classic
#      builder, tagged $TAG (default lab): 4over6d-server, 4over6d-client
#      and 4over6d-web, or the targets named as arguments. The fleet
#      (`make fleet`) adds etcd:
#
#        deploy/docker/build-images.sh server client web etcd
#
#      4over6d-etcd holds Debian's etcd server (package etcd-server; a
#      dynamically linked Go binary) with the libraries ldd names, so it
#      runs FROM scratch too: ETCD=/path/to/etcd names the binary, else the
#      `etcd` on PATH (scripts/deps.sh installs it), else the package is
#      fetched with `apt-get download` into bin/docker-cache/ like busybox.
#
# The build context is bin/docker/ (ignored by git), rebuilt on every run.
set -euo pipefail
cd "$(dirname "$0")/../.."

TAG=${TAG:-lab}
CTX=bin/docker
CACHE=bin/docker-cache
TARGETS=(server client web)
(($#)) && TARGETS=("$@")

step() { printf '==> %s\n' "$*"; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed"
if ! command -v go >/dev/null 2>&1; then
	for d in /usr/local/go/bin /usr/lib/go/bin; do [[ -x $d/go ]] && PATH="$d:$PATH"; done
fi
command -v go >/dev/null 2>&1 || die "Go is not installed (need Go 1.25+)"

# apt_extract PACKAGE DIR unpacks a Debian package into DIR without
# installing it: the .deb comes from `apt-get download`, after an
# `apt-get update` when the lists do not know it yet (root only).
apt_extract() {
	local pkg=$1 dir=$2 tmp
	command -v apt-get >/dev/null 2>&1 ||
		die "no apt-get to fetch $pkg: set BUSYBOX or ETCD to a binary (see above)"
	tmp=$(mktemp -d)
	# apt's download sandbox user must be able to write here.
	chmod 0777 "$tmp"
	if ! (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1); then
		[[ $(id -u) -eq 0 ]] || { rm -rf "$tmp"; die "apt-get download $pkg failed (run as root to allow apt-get update, or set BUSYBOX/ETCD)"; }
		apt-get update -qq >/dev/null
		(cd "$tmp" && apt-get download "$pkg" >/dev/null) || { rm -rf "$tmp"; die "apt-get download $pkg failed"; }
	fi
	dpkg-deb -x "$tmp/${pkg}"_*.deb "$dir"
	rm -rf "$tmp"
}

# fetch_deb_file copies file $2 of Debian package $1 to $3 (in the cache).
fetch_deb_file() {
	local root
	root=$(mktemp -d)
	apt_extract "$1" "$root"
	mkdir -p "$CACHE"
	cp "$root/$2" "$3"
	rm -rf "$root"
}

# static_busybox prints the path of a statically linked busybox, fetching
# Debian's busybox-static package into the cache on first use.
static_busybox() {
	local bb=${BUSYBOX:-$CACHE/busybox}
	if [[ -z ${BUSYBOX:-} && ! -x $bb ]]; then
		fetch_deb_file busybox-static bin/busybox "$bb"
	fi
	[[ -x $bb ]] || die "$bb is not an executable"
	# A dynamically linked ELF names its loader (ld-linux, ld-musl) in its
	# first page; FROM scratch has no loader.
	if head -c 4096 "$bb" | LC_ALL=C grep -qa '/ld-'; then
		die "$bb is dynamically linked: FROM scratch images need a static busybox (Debian: busybox-static)"
	fi
	printf '%s\n' "$bb"
}

# etcd_binary prints the path of an etcd server binary: $ETCD, the etcd on
# PATH, or Debian's etcd-server fetched into the cache on first use.
etcd_binary() {
	local e=${ETCD:-}
	if [[ -z $e ]]; then
		e=$(command -v etcd 2>/dev/null) || e=$CACHE/etcd
	fi
	if [[ $e == "$CACHE/etcd" && ! -x $e ]]; then
		fetch_deb_file etcd-server usr/bin/etcd "$e"
	fi
	[[ -x $e ]] || die "$e is not an executable"
	printf '%s\n' "$e"
}

# with_libs copies the binary $1 to $2/usr/bin/ and every shared library
# and loader ldd names for it under $2 at the same path, so that a
# dynamically linked program runs FROM scratch. A static binary has none.
with_libs() {
	local bin=$1 root=$2 lib n=0
	mkdir -p "$root/usr/bin"
	cp "$bin" "$root/usr/bin/"
	for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
		n=$((n + 1))
	done
	echo "$(basename "$bin"): $n shared libraries"
}

step "static binaries (CGO_ENABLED=0) into $CTX/"
rm -rf "$CTX"
mkdir -p "$CTX/rootfs/bin" "$CTX/rootfs/tmp" "$CTX/etcd-root"
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

if [[ " ${TARGETS[*]} " == *" etcd "* ]]; then
	e=$(etcd_binary)
	step "etcd: $e ($("$e" --version 2>/dev/null | head -n 1)) with its libraries"
	with_libs "$e" "$CTX/etcd-root"
	"$CTX/etcd-root/usr/bin/etcd" --version >/dev/null || die "$e does not run"
fi

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
