// Command sim estimates how long imaging N nodes takes when every deployed
// node serves its image onward (imprint serve --disk), against one server
// feeding everyone. It is calibrated with figures measured by
// bench/tree/run.sh; docs/scale.md explains the model.
//
// Two models. Store-and-forward: a node serves only after its own deploy
// completed and was verified (imprint serve --disk); each server feeds at most
// fanout clients at once and shares its send rate S equally among them; a
// client takes data no faster than its own ingest rate C (fetch, decompress,
// hash, write, read-back verify). A waiting node is given to the server with
// the fewest clients. Rates are fluid (processor sharing), events are
// completions. Cut-through: every node serves chunks as they land
// (imprint deploy --serve); see cutThrough. Swarm: every node takes pieces
// from every other and from the server (imprint deploy --swarm); see swarm.
// With -fit it instead fits the cut-through and swarm models' free
// parameters to a bench/swarm/run.sh results file.
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

type server struct {
	clients []int // node ids being fed
}

type result struct {
	total   float64
	depth   int // longest chain of servers from the master
	servers int
}

// simulate returns the time to image n nodes of an image of size bytes.
// fanout <= 0 means a single server with no limit (every node from the
// master).
func simulate(n int, size, c, master, s float64, fanout int, startup float64) result {
	tree := fanout > 0
	if !tree {
		fanout = n
	}
	remaining := make([]float64, n)
	level := make([]int, n)
	servers := []*server{{}} // 0 is the master
	serverOf := make([]int, n)
	readyAt := []float64{0} // when a server starts serving
	next := 0               // next node to start
	now := 0.0
	active := 0
	depth := 0
	assign := func() {
		for next < n {
			best := -1
			for i, sv := range servers {
				if readyAt[i] > now || len(sv.clients) >= fanout {
					continue
				}
				if best < 0 || len(sv.clients) < len(servers[best].clients) {
					best = i
				}
			}
			if best < 0 {
				return
			}
			servers[best].clients = append(servers[best].clients, next)
			serverOf[next] = best
			remaining[next] = size
			if best > 0 {
				level[next] = level[best-1] + 1
			}
			next++
			active++
		}
	}
	rate := func(id int) float64 {
		k := float64(len(servers[serverOf[id]].clients))
		if serverOf[id] == 0 {
			return math.Min(c, master/k)
		}
		return math.Min(c, s/k)
	}
	for {
		assign()
		if active == 0 && next >= n {
			break
		}
		// The next event: a client completes, or a new server comes up.
		dt := math.Inf(1)
		for _, sv := range servers {
			for _, id := range sv.clients {
				dt = math.Min(dt, remaining[id]/rate(id))
			}
		}
		for _, r := range readyAt {
			if r > now {
				dt = math.Min(dt, r-now)
			}
		}
		if math.IsInf(dt, 1) {
			panic("simulation stalled")
		}
		for _, sv := range servers {
			for _, id := range sv.clients {
				remaining[id] -= rate(id) * dt
			}
		}
		now += dt
		for _, sv := range servers {
			kept := sv.clients[:0]
			for _, id := range sv.clients {
				if remaining[id] > 1e-6*size {
					kept = append(kept, id)
					continue
				}
				active--
				depth = max(depth, level[id]+1)
				if tree {
					servers = append(servers, &server{})
					readyAt = append(readyAt, now+startup)
				}
			}
			sv.clients = kept
		}
	}
	return result{total: now, depth: depth, servers: len(servers)}
}

// cutThrough estimates a tree where every node serves while it deploys
// (imprint deploy --serve): the f-ary tree is formed at once, each node
// takes data at min(C, S/f) (its parent's send rate shared by f children)
// and can run no further ahead than its parent, so the last leaf finishes
// one image time plus, per level, a start-up and one chunk behind.
func cutThrough(n int, size, c, master, s float64, fanout int, startup, chunk float64) (total float64, depth int) {
	nodes, width := 0, 1
	for nodes < n {
		width *= fanout
		nodes += width
		depth++
	}
	// The master's children and every node's children share a sender;
	// the slowest level sets the pace of the whole pipeline.
	rate := math.Min(c, math.Min(master, s)/float64(fanout))
	return size/rate + float64(depth)*(startup+chunk/rate), depth
}

// swarm estimates a BitTorrent swarm of n nodes that all start together: a
// fluid model (Kumar and Ross's bound for peer-to-peer distribution, with an
// efficiency factor). A node takes data no faster than down (its ingest or
// link); the server sends at most us in all; the peers upload up each, of
// which a share eff is put to use (the engine's choking, piece
// availability, protocol overhead). Every node must get the whole image, so
// the swarm needs n*size bytes from a total upload of us + eff*n*up; plus a
// fixed start-up (tracker, handshakes, the end game).
func swarm(n int, size, down, us, up, eff, startup float64) float64 {
	t := math.Max(size/down, size/us)
	t = math.Max(t, float64(n)*size/(us+eff*float64(n)*up))
	return startup + t
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-fit" {
		if err := fit(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "sim -fit:", err)
			os.Exit(2)
		}
		return
	}
	var (
		nodes   = flag.Int("nodes", 1000, "nodes to image")
		sizeMiB = flag.Float64("size-mib", 1024, "image data per node, MiB (what is sent: the non-zero chunks)")
		clientR = flag.Float64("client-mbs", 0, "measured ingest rate of one deploy, MB/s (required)")
		masterR = flag.Float64("master-mbs", 0, "measured send rate of the master (a store server) to clients fetching different chunks, MB/s (required)")
		serverR = flag.Float64("server-mbs", 0, "measured send rate of one serve --disk to clients fetching different chunks, MB/s (required)")
		lockR   = flag.String("lockstep-mbs", "", "measured send rates of one serve --disk to F clients fetching the same chunks together (cut-through children), F=MB/s[,...]; a fan-out not listed uses -server-mbs")
		mlockR  = flag.String("master-lockstep-mbs", "", "the same for the master; a fan-out not listed uses -master-mbs")
		link    = flag.Float64("link-mbs", 0, "also cap every rate at this network link rate, MB/s (0: no cap)")
		fanouts = flag.String("fanouts", "4,8,16", "fan-outs to try")
		startup = flag.Float64("startup-s", 1, "seconds from a node's start (cut-through) or completed deploy (store-and-forward) until it serves")
		chunkM  = flag.Float64("chunk-mib", 4, "chunk size, MiB (cut-through: a child runs one chunk behind its parent)")
		swEff   = flag.Float64("swarm-eff", 0, "swarm: share of the peers' upload put to use, fitted by -fit (0: no swarm rows)")
		swStart = flag.Float64("swarm-startup-s", 0, "swarm: fixed start-up seconds, fitted by -fit")
		peerUp  = flag.Float64("peer-up-mbs", 0, "swarm: a peer's upload, MB/s (default: -link-mbs if set, else -server-mbs)")
	)
	flag.Parse()
	if *clientR <= 0 || *serverR <= 0 || *masterR <= 0 {
		fmt.Fprintln(os.Stderr, "sim: give -client-mbs, -master-mbs and -server-mbs (measured by bench/tree/run.sh)")
		os.Exit(2)
	}
	capped := func(mbs float64) float64 {
		r := mbs * 1e6
		if *link > 0 {
			r = math.Min(r, *link*1e6)
		}
		return r
	}
	rates := func(spec string) map[int]float64 {
		out := map[int]float64{}
		if spec == "" {
			return out
		}
		for _, kv := range strings.Split(spec, ",") {
			f, r, ok := strings.Cut(kv, "=")
			fo, err1 := strconv.Atoi(f)
			rate, err2 := strconv.ParseFloat(r, 64)
			if !ok || err1 != nil || err2 != nil {
				fmt.Fprintf(os.Stderr, "sim: %q: want F=MB/s\n", kv)
				os.Exit(2)
			}
			out[fo] = capped(rate)
		}
		return out
	}
	c, m, s := capped(*clientR), capped(*masterR), capped(*serverR)
	lock, mlock := rates(*lockR), rates(*mlockR)
	size := *sizeMiB * (1 << 20)
	one := size / math.Min(c, m)
	fmt.Printf("image %.0f MiB, %d nodes; client ingest %.0f MB/s, master sends %.0f MB/s, a node %.0f MB/s\n", *sizeMiB, *nodes, c/1e6, m/1e6, s/1e6)
	fmt.Printf("one node alone (from the master): %.1f s\n\n", one)
	fmt.Printf("| setup | total | x one node | tree depth |\n|---|---|---|---|\n")
	single := simulate(*nodes, size, c, m, s, 0, *startup)
	fmt.Printf("| single server | %s | %.1fx | 1 |\n", human(single.total), single.total/one)
	var fos []int
	for _, f := range strings.Split(*fanouts, ",") {
		fo, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || fo < 1 {
			fmt.Fprintf(os.Stderr, "sim: fan-out %q\n", f)
			os.Exit(2)
		}
		fos = append(fos, fo)
	}
	for _, fo := range fos {
		r := simulate(*nodes, size, c, m, s, fo, *startup)
		fmt.Printf("| tree, fan-out %d, store-and-forward (serve --disk after deploy) | %s | %.1fx | %d |\n", fo, human(r.total), r.total/one, r.depth)
	}
	for _, fo := range fos {
		ls, ok := lock[fo]
		if !ok {
			ls = s
		}
		ml, ok := mlock[fo]
		if !ok {
			ml = m
		}
		tot, d := cutThrough(*nodes, size, c, ml, ls, fo, *startup, *chunkM*(1<<20))
		fmt.Printf("| tree, fan-out %d, cut-through (deploy --serve; children get %.0f MB/s each) | %s | %.1fx | %d |\n",
			fo, math.Min(c, math.Min(ml, ls)/float64(fo))/1e6, human(tot), tot/one, d)
	}
	if *swEff > 0 {
		up := s
		if *peerUp > 0 {
			up = capped(*peerUp)
		} else if *link > 0 {
			up = *link * 1e6
		}
		tot := swarm(*nodes, size, c, m, up, *swEff, *swStart)
		fmt.Printf("| swarm (deploy --swarm; peers use %.0f%% of their %.0f MB/s upload, %.0f s start-up) | %s | %.1fx | |\n",
			100**swEff, up/1e6, *swStart, human(tot), tot/one)
	}
}

func human(sec float64) string {
	if sec < 120 {
		return fmt.Sprintf("%.0f s", sec)
	}
	if sec < 7200 {
		return fmt.Sprintf("%.1f min", sec/60)
	}
	return fmt.Sprintf("%.1f h", sec/3600)
}
