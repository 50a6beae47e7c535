package swarm

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/anacrolix/torrent"
)

// picker chooses which missing pieces a node wants at a time. Left to
// itself the engine asks every peer for every wanted piece, so with the
// server the only source at first, its upload is spread round-robin over
// every node and many pieces each: nothing completes for long and peers
// have nothing to trade. The picker wants few pieces at once: at most
// solo that only the server holds (in this node's own random order, so
// nodes take distinct pieces from it), and up to shared that other peers
// already hold; the rest waits at PiecePriorityNone. Near the end
// (endgame or fewer missing) and whenever no byte came for idle, it wants
// every missing piece, as the engine alone would.
type picker struct {
	order  []int // the node's random permutation of the pieces it needs
	solo   int   // pieces only the server holds, wanted at once
	shared int   // pieces peers hold, wanted at once
	// endgame: at most this many missing, every one is wanted.
	endgame int

	wanted map[int]bool
	all    bool // everything missing is wanted from now on
}

func newPicker(need []int, solo, shared, endgame int, r *rand.Rand) *picker {
	order := append([]int(nil), need...)
	r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	return &picker{order: order, solo: solo, shared: shared, endgame: endgame, wanted: map[int]bool{}}
}

// pick returns the pieces to want now (the rest are not wanted), given
// which pieces are complete, how many peers other than the server hold
// each, and whether the node went without bytes too long. Wanted pieces
// stay wanted until complete: dropping a partial one would waste it.
// The result holds at most solo+shared pieces until the endgame, and
// every missing piece once it comes.
func (pk *picker) pick(complete func(int) bool, peers func(int) int, idle bool) map[int]bool {
	missing := 0
	for _, p := range pk.order {
		if !complete(p) {
			missing++
		}
	}
	if idle || missing <= pk.endgame {
		pk.all = true
	}
	for p := range pk.wanted {
		if complete(p) {
			delete(pk.wanted, p)
		}
	}
	if pk.all {
		for _, p := range pk.order {
			if !complete(p) {
				pk.wanted[p] = true
			}
		}
		return pk.wanted
	}
	nsolo, nshared := 0, 0
	for p := range pk.wanted {
		if peers(p) > 0 {
			nshared++
		} else {
			nsolo++
		}
	}
	// A solo piece that peers came to hold counts as shared now, which
	// may leave the window briefly above its bound by the solo ones
	// taken before; the sum stays within solo+shared below.
	for _, p := range pk.order {
		if len(pk.wanted) >= pk.solo+pk.shared {
			break
		}
		if complete(p) || pk.wanted[p] {
			continue
		}
		if peers(p) > 0 {
			if nshared < pk.shared {
				pk.wanted[p] = true
				nshared++
			}
		} else if nsolo < pk.solo {
			pk.wanted[p] = true
			nsolo++
		}
	}
	if len(pk.wanted) == 0 {
		// Without a solo window and no piece at a peer, still one.
		for _, p := range pk.order {
			if !complete(p) {
				pk.wanted[p] = true
				break
			}
		}
	}
	return pk.wanted
}

// pickerParams are the picker's window sizes; IMPRINT_SWARM_PICK="solo,shared,endgame"
// sets them for measurements, "0" turns the picker off (every piece wanted at once).
func pickerParams() (solo, shared, endgame int, on bool) {
	solo, shared, endgame = 2, 8, 4
	v := os.Getenv("IMPRINT_SWARM_PICK")
	if v == "" {
		return solo, shared, endgame, true
	}
	if v == "0" || v == "flat" {
		return 0, 0, 0, false
	}
	f := strings.Split(v, ",")
	if len(f) == 3 {
		a, e1 := strconv.Atoi(f[0])
		b, e2 := strconv.Atoi(f[1])
		c, e3 := strconv.Atoi(f[2])
		if e1 == nil && e2 == nil && e3 == nil && a+b > 0 {
			return a, b, c, true
		}
	}
	return solo, shared, endgame, true
}

// runPicker keeps s's piece priorities to what pk wants until s has every
// piece or is dropped. server is the imprint server's base URL: its
// address's peer (the seeding peer) does not count as a peer holding a
// piece. idle is how long without a byte before everything is wanted.
func (s *Session) runPicker(pk *picker, server string, idle time.Duration) {
	srv := map[string]bool{}
	if u, err := url.Parse(server); err == nil {
		if ip := net.ParseIP(u.Hostname()); ip != nil {
			srv[ip.String()] = true
		} else if addrs, err := net.LookupIP(u.Hostname()); err == nil {
			for _, ip := range addrs {
				srv[ip.String()] = true
			}
		}
	}
	sub := s.t.SubscribePieceStateChanges()
	defer sub.Close()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	// Join leaves every piece at None (the engine's default) for the picker.
	prio := map[int]torrent.PiecePriority{}
	var last int64
	since := time.Now()
	count := make([]int, len(s.store.ps))
	for {
		if s.Missing() == 0 {
			return
		}
		st := s.t.Stats()
		if b := st.BytesReadData.Int64(); b > last {
			last, since = b, time.Now()
		}
		clear(count)
		for _, pc := range s.t.PeerConns() {
			if ip := peerIP(&pc.Peer); ip != nil && srv[ip.String()] {
				continue
			}
			pc.PeerPieces().Iterate(func(x uint32) bool {
				if int(x) < len(count) {
					count[x]++
				}
				return true
			})
		}
		want := pk.pick(func(p int) bool { return s.store.ps[p].complete.Load() },
			func(p int) int { return count[p] }, time.Since(since) > idle || s.wantAll.Load())
		for _, p := range pk.order {
			np := torrent.PiecePriorityNone
			if want[p] && !s.store.ps[p].complete.Load() {
				// Server-only pieces first: the server's connection then
				// asks for them before pieces peers can give.
				np = torrent.PiecePriorityNormal
				if count[p] == 0 && os.Getenv("IMPRINT_SWARM_PICK_FLAT") == "" {
					np = torrent.PiecePriorityHigh
				}
			}
			if prio[p] == np {
				continue
			}
			prio[p] = np
			s.t.Piece(p).SetPriority(np)
		}
		select {
		case <-s.t.Closed():
			return
		case <-sub.Values:
		case <-tick.C:
		}
	}
}

// trace prints s's state each second to stderr while IMPRINT_SWARM_TRACE
// is set (measurements only): seconds, complete, partial, wanted pieces,
// bytes read, useful, written.
func (s *Session) trace() {
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.t.Closed():
			return
		case <-tick.C:
		}
		complete, partial, wanted := 0, 0, 0
		for _, r := range s.t.PieceStateRuns() {
			if r.Complete {
				complete += r.Length
			} else if r.Partial {
				partial += r.Length
			}
			if r.Priority > torrent.PiecePriorityNone && !r.Complete {
				wanted += r.Length
			}
		}
		st := s.t.Stats()
		fmt.Fprintf(os.Stderr, "trace %.0f complete %d partial %d wanted %d read %d useful %d written %d conns %d\n",
			time.Since(start).Seconds(), complete, partial, wanted, st.BytesReadData.Int64(), st.BytesReadUsefulData.Int64(), st.BytesWrittenData.Int64(), len(s.t.PeerConns()))
		if s.Missing() == 0 {
			return
		}
	}
}
