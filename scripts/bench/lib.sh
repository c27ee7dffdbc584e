# Shared helpers of scripts/bench/run.sh and scripts/bench/scale.sh: tool
# installation, namespaces with cleanup, process bookkeeping by PID, and
# /proc readings. Sourced, not run.
#
# Every namespace, process, nftables table and file a script creates through
# these helpers is removed by bench_cleanup, which the scripts install as
# their EXIT trap (INT and TERM exit through it too).

# Namespaces get a per-run suffix so that a bench never collides with the
# demo lab, the tests or another bench running on the same machine.
BENCH_ID=${BENCH_ID:-$$}
BENCH_NS=()
BENCH_PIDS=()
BENCH_FILES=()
BENCH_WORK=$(mktemp -d /tmp/4over6-bench.XXXXXX)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# bench_need CMD PACKAGE...: install Debian packages for missing commands.
bench_install() {
	local missing=() pair cmd pkg
	for pair in "$@"; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	say "installing ${missing[*]} (apt, no recommends)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || true
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

bench_ns_add() {
	local ns=$1
	if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
		echo "namespace $ns already exists; refusing to touch it" >&2
		return 1
	fi
	ip netns add "$ns"
	BENCH_NS+=("$ns")
	in_ns "$ns" ip link set lo up
}

# bench_links wires the three namespaces NS_C, NS_S and NS_I: client and
# server over IPv6 (MTU 1600, so wireguard's overhead fits), server and
# internet over IPv4, with the server's default route towards the internet.
bench_links() {
	ip link add c6 netns "$NS_S" mtu 1600 type veth peer name eth6 netns "$NS_C" mtu 1600
	in_ns "$NS_S" ip addr add 2001:db8:1::1/64 dev c6 nodad
	in_ns "$NS_C" ip addr add 2001:db8:1::2/64 dev eth6 nodad
	ip link add inet4 netns "$NS_S" type veth peer name eth4 netns "$NS_I"
	in_ns "$NS_S" ip addr add 198.51.100.1/24 dev inet4
	in_ns "$NS_I" ip addr add 198.51.100.2/24 dev eth4
	for l in "$NS_S c6" "$NS_C eth6" "$NS_S inet4" "$NS_I eth4"; do in_ns ${l% *} ip link set ${l#* } up; done
	in_ns "$NS_S" ip route add default via 198.51.100.2
}

# bench_client_links NS...: the K-th namespace (from 1) gets a link of its
# own to NS_S, like NS_C's (IPv6 only, MTU 1600): 2001:db8:1:K::2/64, with a
# default route via the server's 2001:db8:1:K::1, so 2001:db8:1::1 (where
# the servers listen) is one hop away from every client.
bench_client_links() {
	local k=0 ns
	for ns in "$@"; do
		k=$((k + 1))
		ip link add "k$k" netns "$NS_S" mtu 1600 type veth peer name eth6 netns "$ns" mtu 1600
		in_ns "$NS_S" ip addr add "2001:db8:1:$k::1/64" dev "k$k" nodad
		in_ns "$ns" ip addr add "2001:db8:1:$k::2/64" dev eth6 nodad
		in_ns "$NS_S" ip link set "k$k" up
		in_ns "$ns" ip link set eth6 up
		in_ns "$ns" ip -6 route add default via "2001:db8:1:$k::1"
	done
}

# bench_start NAME NS CMD...: start a process in a namespace, logging to
# $BENCH_WORK/NAME.log; its PID (ip netns exec execs, so it is the
# command's own PID) is kept for the cleanup and stored in PID_<NAME>.
bench_start() {
	local name=$1 ns=$2
	shift 2
	ip netns exec "$ns" "$@" >"$BENCH_WORK/$name.log" 2>&1 &
	local pid=$!
	BENCH_PIDS+=("$pid")
	printf -v "PID_${name//-/_}" '%s' "$pid"
}

# bench_stop PID...: SIGTERM, wait up to 5 s, then SIGKILL; only these PIDs.
bench_stop() {
	local pid i
	for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "$@"; do
		for i in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	local keep=() p
	for p in "${BENCH_PIDS[@]}"; do
		[[ " $* " == *" $p "* ]] || keep+=("$p")
	done
	BENCH_PIDS=("${keep[@]}")
}

bench_cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local all=("${BENCH_PIDS[@]}") pid
	((${#all[@]})) && bench_stop "${all[@]}"
	for pid in "${all[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			echo "process $pid survived SIGKILL; cleanup failed" >&2
			rc=1
		fi
	done
	local ns f
	for ns in "${BENCH_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
	for f in "${BENCH_FILES[@]}"; do rm -f "$f"; done
	if [[ -n ${BENCH_KEEP_WORK:-} ]]; then
		echo "work files kept in $BENCH_WORK" >&2
	else
		rm -rf "$BENCH_WORK"
	fi
	((${#BENCH_NS[@]})) && echo "removed namespaces: ${BENCH_NS[*]}" >&2
	exit "$rc"
}

bench_traps() {
	trap bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
	local secs=$1 i
	shift
	for i in $(seq $((secs * 10))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# cpu_ticks PID...: user+system clock ticks of the processes, all threads.
cpu_ticks() {
	local pid total=0 stat rest
	for pid in "$@"; do
		stat=$(<"/proc/$pid/stat") || return 1
		rest=${stat##*) } # fields after the command name, starting at field 3
		read -r -a f <<<"$rest"
		total=$((total + f[11] + f[12])) # fields 14 (utime) and 15 (stime)
	done
	echo "$total"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

machine_json() {
	local commit dirty
	commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	dirty=$(git status --porcelain 2>/dev/null | grep -q . && echo true || echo false)
	jq -n --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" --arg commit "$commit" --argjson dirty "$dirty" \
		--arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
		--argjson nproc "$(nproc)" --arg kernel "$(uname -r)" --arg go "$(go env GOVERSION)" \
		--arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
		'{date:$date, commit:$commit, dirty:$dirty, cpu:$cpu, nproc:$nproc, kernel:$kernel, go:$go, load_before:$load}'
}
