# Shared by bench/swarm/run.sh and bench/swarm/faults.sh (sourced): the
# shaped network. Expects NS (namespace prefix), NET (their /24), RATE
# (Mbit/s each way per link) and maxn (nodes) set; netup builds
# $NS-br (the bridge), $NS-0 (the server, $NET.1) and $NS-1..$NS-maxn
# (node I at $NET.(10+I)); netdown removes them.

# --- network: imb-br holds the bridge; imb-0 is the server, imb-I node I ---
shape() { # shape NS DEV: egress of DEV in NS limited to RATE
	ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "${RATE}mbit" burst 64k latency 100ms
}
netdown() {
	local i
	for i in $(seq 0 "$maxn"); do ip netns del "$NS-$i" 2>/dev/null || true; done
	ip netns del $NS-br 2>/dev/null || true
}
netup() {
	local i ns
	ip netns add $NS-br
	ip -n $NS-br link set lo up
	ip -n $NS-br link add br0 type bridge
	ip -n $NS-br link set br0 up
	for i in $(seq 0 "$maxn"); do
		ns=$NS-$i
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		# Both ends shaped: the node's end limits its upload, the bridge's end
		# its download (no ifb needed).
		ip -n $NS-br link add "p$i" type veth peer name eth0 netns "$ns"
		ip -n $NS-br link set "p$i" master br0 up
		if [ -n "${BENCH_GSO_SEGS:-}" ]; then
			ip -n $NS-br link set dev "p$i" gso_max_segs "$BENCH_GSO_SEGS"
			ip -n "$ns" link set dev eth0 gso_max_segs "$BENCH_GSO_SEGS"
		fi
		ip -n "$ns" addr add "$NET.$((i == 0 ? 1 : 10 + i))/24" dev eth0
		ip -n "$ns" link set eth0 up
		shape $NS-br "p$i"
		shape "$ns" eth0
	done
}
addr() { if [ "$1" -eq 0 ]; then echo "$NET.1"; else echo "$NET.$((10 + $1))"; fi; }
