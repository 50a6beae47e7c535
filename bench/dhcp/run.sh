#!/usr/bin/env bash
# DHCP benchmark: imprint's DHCP server (full mode) vs dnsmasq, DORA
# exchanges per second, same load generator (bench/dhcp, Go), same
# namespaces, same /16 pool, in one run. Two scenarios:
#   persist: both keep a lease file (the way they are deployed). dnsmasq
#            rewrites and fsyncs its whole file after every change; imprint
#            writes its file (renameio: temp file, fsync, rename) at most
#            every 100 ms, coalescing the changes in between.
#   memory:  neither keeps a file (imprint without LeaseFile, dnsmasq
#            --leasefile-ro): the protocol and allocation paths alone.
#
#   bash bench/dhcp/run.sh
#   DHCP_CLIENTS=5000       clients (distinct MACs), one DORA each, per run
#   DHCP_CONCURRENCY=32     DORAs in flight
#   DHCP_REPS=3             runs per server and scenario (alternating; median reported)
#   DHCP_MAX_TIME=120s      bound on each run (a run cut short reports its rate so far)
#
# Network: two namespaces made here (impdhcp-srv-bench-*, impdhcp-cli-bench-*)
# joined by a veth pair created inside them; 10.77.0.1/16 on the server
# side, the client side unconfigured. No packet leaves them. Both are
# deleted on exit, whatever happens.
#
# Why these dnsmasq flags: --no-ping, because by default dnsmasq pings
# every new address and waits up to 3 s for an answer before offering it,
# which imprint does not do; --quiet-dhcp, because imprint's server logs
# no per-lease lines here either; --dhcp-lease-max, because the default of
# 1000 is below the client count; --bind-interfaces/--port=0/--user=root
# to run beside nothing else, without DNS, writing its lease file in our
# temporary directory.
#
# Why not perfdhcp: Debian 12's kea-admin (2.2.0) does ship /usr/sbin/perfdhcp,
# but its DHCPv4 traffic is relayed: it needs an address on the interface,
# sends from port 67 with giaddr set to that address, and wants the answer
# there (checked: imprint's server drops every such DISCOVER with "relayed
# requests (giaddr) are not supported"; to 255.255.255.255 perfdhcp's
# sendmsg fails with EACCES). imprint's server serves its own segment only.
# The Go generator sends what netboot firmware sends: broadcasts from
# 0.0.0.0:68 on the segment itself.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLIENTS=${DHCP_CLIENTS:-5000}
CONC=${DHCP_CONCURRENCY:-32}
REPS=${DHCP_REPS:-3}
MAXT=${DHCP_MAX_TIME:-120s}

log() { printf '[dhcp-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}

[[ $(id -u) == 0 ]] || die "run as root (network namespaces)"
for t in ip dnsmasq go; do
	command -v "$t" >/dev/null || die "$t not found"
done

W=$(mktemp -d /tmp/imprint-dhcp-bench.XXXXXX)
ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
SRV=impdhcp-srv-bench-$ID
CLI=impdhcp-cli-bench-$ID
SERVER_PID=

cleanup() {
	if [[ -n $SERVER_PID ]]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	ip netns del "$SRV" 2>/dev/null || true
	ip netns del "$CLI" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

log "building the generator"
(cd "$ROOT" && go build -o "$W/dhcpbench" ./bench/dhcp)

ip netns add "$SRV" || die "ip netns add not permitted here"
ip netns add "$CLI"
ip -n "$SRV" link add veth-s type veth peer name veth-c netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/16 dev veth-s
ip -n "$SRV" link set veth-s up
ip -n "$SRV" link set lo up
ip -n "$CLI" link set veth-c up
ip -n "$CLI" link set lo up

POOL_START=10.77.1.0
POOL_END=10.77.255.254

# start_server NAME SCENARIO: starts it in the server namespace (with a
# fresh lease file in the persist scenario) and waits until it listens on
# port 67.
start_server() {
	rm -f "$W/leases" "$W/dnsmasq.leases"
	local imp_leases=() dns_leases=(--leasefile-ro)
	if [[ $2 == persist ]]; then
		imp_leases=(-leases "$W/leases")
		dns_leases=(--dhcp-leasefile="$W/dnsmasq.leases")
	fi
	case $1 in
	imprint)
		ip netns exec "$SRV" "$W/dhcpbench" serve -iface veth-s -ip 10.77.0.1/16 \
			-pool "$POOL_START-$POOL_END" "${imp_leases[@]}" 2>"$W/server.log" &
		;;
	dnsmasq)
		ip netns exec "$SRV" dnsmasq --no-daemon --conf-file=/dev/null --interface=veth-s \
			--bind-interfaces --port=0 --dhcp-range=$POOL_START,$POOL_END,255.255.0.0,12h \
			"${dns_leases[@]}" --dhcp-lease-max=$((CLIENTS + 1000)) \
			--no-ping --quiet-dhcp --pid-file="$W/dnsmasq.pid" --user=root \
			--log-facility=- 2>"$W/server.log" &
		;;
	esac
	SERVER_PID=$!
	for _ in $(seq 100); do
		if ip netns exec "$SRV" ss -Hlun 'sport = :67' | grep -q .; then
			return 0
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || die "$1 died: $(cat "$W/server.log")"
		sleep 0.1
	done
	die "$1 does not listen on port 67"
}

stop_server() {
	kill "$SERVER_PID"
	wait "$SERVER_PID" || true
	SERVER_PID=
}

run_one() { # run_one NAME SCENARIO SEED -> prints the generator's JSON line
	start_server "$1" "$2"
	local out
	out=$(ip netns exec "$CLI" "$W/dhcpbench" load -iface veth-c -clients "$CLIENTS" \
		-concurrency "$CONC" -max-time "$MAXT" -seed "$3" 2>"$W/load.log") ||
		die "generator failed: $(tail -5 "$W/load.log")"
	stop_server
	if [[ -s $W/load.log ]]; then
		log "$1: $(wc -l <"$W/load.log") client errors, first: $(head -1 "$W/load.log")"
	fi
	if [[ $2 == persist ]]; then
		local f=$W/leases
		[[ $1 == dnsmasq ]] && f=$W/dnsmasq.leases
		log "$1: lease file has $(grep -c '10\.77\.' "$f") leases"
	fi
	echo "$out"
}

field() { sed -E "s/.*\"$2\":([^,}]*).*/\1/" <<<"$1"; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RATES P99
log "$CLIENTS clients, $CONC in flight, $REPS runs per server and scenario, ${MAXT} bound per run; load: $(cut -d' ' -f1-3 /proc/loadavg)"
seed=1
for scen in persist memory; do
	for rep in $(seq "$REPS"); do
		for srv in imprint dnsmasq; do
			seed=$((seed + 1))
			line=$(run_one "$srv" "$scen" "$seed")
			log "$scen $srv run $rep: $line"
			RATES[$scen,$srv]+="$(printf '%.0f' "$(field "$line" dora_per_second)") "
			P99[$scen,$srv]+="$(printf '%.0f' "$(field "$line" p99_ms)") "
			if [[ $(field "$line" completed) != "$CLIENTS" ]]; then
				log "WARNING: $srv completed $(field "$line" completed) of $CLIENTS"
			fi
		done
	done
done

DNSV=$(dnsmasq --version | head -1 | awk '{print $3}')
echo
echo "DHCP DORA/s, $CLIENTS clients, $CONC in flight, median of $REPS (load at end: $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| scenario | imprint DORA/s | dnsmasq $DNSV DORA/s | ratio | imprint runs (p99 ms) | dnsmasq runs (p99 ms) |"
echo "|---|---|---|---|---|---|"
for scen in persist memory; do
	imp=$(median "${RATES[$scen,imprint]}")
	dns=$(median "${RATES[$scen,dnsmasq]}")
	ratio=$(awk -v a="$imp" -v b="$dns" 'BEGIN { printf "%.2fx", a / b }')
	echo "| $scen | $imp | $dns | $ratio | ${RATES[$scen,imprint]}(${P99[$scen,imprint]% }) | ${RATES[$scen,dnsmasq]}(${P99[$scen,dnsmasq]% }) |"
done
echo
echo "goal: imprint >= 1x dnsmasq"
