package swarm

import (
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/anacrolix/torrent"
)

// picker chooses which of a node's missing chunks it wants at a time.
// With 64 KiB pieces a chunk is many pieces, and the engine, on every
// request update of every connection, scans every piece at a priority
// above None (up to its 64 MiB of unverified bytes): wanting the whole
// image at once makes that scan, not the links, the cost at N=16. The
// picker keeps a window of chunks wanted: up to solo pieces of chunks
// only the server holds (in this node's own random order, so nodes take
// distinct chunks from it and then trade them) and up to shared pieces
// of chunks other peers hold; the rest wait at None. A chunk stays in
// the window until it is done (a piece dropped half-fetched would be
// wasted). When the rest fits the window, when no byte came for idle, or
// once the web seed is added, every missing chunk is wanted, as without
// the picker.
type picker struct {
	order  []int // the node's random permutation of the chunks it needs
	solo   int   // pieces of server-only chunks wanted at once
	shared int   // pieces of chunks peers hold wanted at once

	window map[int]bool // chunks wanted now
	all    bool         // every missing chunk is wanted from now on
}

func newPicker(need []int, solo, shared int, r *rand.Rand) *picker {
	order := append([]int(nil), need...)
	r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	return &picker{order: order, solo: solo, shared: shared, window: map[int]bool{}}
}

// pick returns the chunks to want now, given which chunks the node still
// needs, how many of a chunk's pieces it lacks, whether other peers hold
// any of those, and whether the node went without bytes too long. The
// window never drops a chunk it still needs; it holds fewer than
// solo+shared missing pieces plus one chunk's before every chunk is
// wanted; and it is never empty while a chunk is needed.
func (pk *picker) pick(needs func(k int) bool, lacking func(k int) int, atPeers func(k int) bool, idle bool) map[int]bool {
	for k := range pk.window {
		if !needs(k) {
			delete(pk.window, k)
		}
	}
	missing := 0
	for _, k := range pk.order {
		if needs(k) {
			missing += lacking(k)
		}
	}
	if idle || missing <= pk.solo+pk.shared {
		pk.all = true
	}
	if pk.all {
		for _, k := range pk.order {
			if needs(k) {
				pk.window[k] = true
			}
		}
		return pk.window
	}
	nsolo, nshared := 0, 0
	for k := range pk.window {
		if atPeers(k) {
			nshared += lacking(k)
		} else {
			nsolo += lacking(k)
		}
	}
	for _, k := range pk.order {
		// The sum bounds the window too: chunks taken as solo that peers
		// came to hold count as shared now, and would otherwise let the
		// window grow by solo each time.
		if nsolo+nshared >= pk.solo+pk.shared || (nsolo >= pk.solo && nshared >= pk.shared) {
			break
		}
		if pk.window[k] || !needs(k) {
			continue
		}
		if atPeers(k) {
			if nshared < pk.shared {
				pk.window[k] = true
				nshared += lacking(k)
			}
		} else if nsolo < pk.solo {
			pk.window[k] = true
			nsolo += lacking(k)
		}
	}
	if len(pk.window) == 0 {
		// Nothing at peers and no solo room (solo 0): still one chunk.
		for _, k := range pk.order {
			if needs(k) {
				pk.window[k] = true
				break
			}
		}
	}
	return pk.window
}

// Default window: 64 pieces (4 MiB at 64 KiB) that only the server
// holds and 192 that peers hold; docs/performance.md has the A/B.
const (
	pickSolo   = 64
	pickShared = 192
	// pickIdle: a node without a new piece this long wants every chunk:
	// whatever held the window back, the engine alone is no worse.
	pickIdle = 3 * time.Second
	// pickEvery: how often the window is refilled; 256 pieces last a
	// node ~7 s at a 20 Mbit/s link's full rate.
	pickEvery = 250 * time.Millisecond
)

// pickerParams are the picker's window sizes. IMPRINT_SWARM_PICK="solo,shared"
// (pieces) sets them for measurements; "0" turns the picker off (every
// chunk wanted at once, a random half of them first).
func pickerParams() (solo, shared int, on bool) {
	v := os.Getenv("IMPRINT_SWARM_PICK")
	if v == "0" {
		return 0, 0, false
	}
	if a, b, ok := strings.Cut(v, ","); ok {
		x, e1 := strconv.Atoi(a)
		y, e2 := strconv.Atoi(b)
		if e1 == nil && e2 == nil && x >= 0 && y >= 0 && x+y > 0 {
			return x, y, true
		}
	}
	return pickSolo, pickShared, true
}

// serverIPs are the addresses of the server's base URL's host: its
// seeding peer does not count as a peer holding a chunk.
func serverIPs(server string) map[string]bool {
	srv := map[string]bool{}
	u, err := url.Parse(server)
	if err != nil {
		return srv
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil {
		srv[ip.String()] = true
	} else if addrs, err := net.LookupIP(u.Hostname()); err == nil {
		for _, ip := range addrs {
			srv[ip.String()] = true
		}
	}
	return srv
}

// pickState is what runPicker keeps between rounds.
type pickState struct {
	pk    *picker
	srv   map[string]bool
	prio  []torrent.PiecePriority // what the engine was told, by piece
	count []int                   // non-server peers holding each piece
}

// round sets s's piece priorities to what the picker wants now: the
// missing pieces of the window's chunks, High for chunks only the server
// holds (the server's connection asks for them first), Normal for the
// rest of the window, None for everything else.
func (s *Session) round(ps *pickState, idle bool) {
	clear(ps.count)
	for _, pc := range s.t.PeerConns() {
		if ip := peerIP(&pc.Peer); ip != nil && ps.srv[ip.String()] {
			continue
		}
		pc.PeerPieces().Iterate(func(x uint32) bool {
			if int(x) < len(ps.count) {
				ps.count[x]++
			}
			return true
		})
	}
	st, tor := s.store, s.Tor
	lacking := func(k int) int {
		n := 0
		first, end := tor.pieces(k)
		for p := first; p < end; p++ {
			if !st.ps[p].complete.Load() {
				n++
			}
		}
		return n
	}
	atPeers := func(k int) bool {
		first, end := tor.pieces(k)
		for p := first; p < end; p++ {
			if ps.count[p] > 0 && !st.ps[p].complete.Load() {
				return true
			}
		}
		return false
	}
	window := ps.pk.pick(st.needs, lacking, atPeers, idle)
	for _, k := range ps.pk.order {
		first, end := tor.pieces(k)
		in, high := window[k], window[k] && !atPeers(k)
		for p := first; p < end; p++ {
			np := torrent.PiecePriorityNone
			if in && !st.ps[p].complete.Load() {
				np = torrent.PiecePriorityNormal
				if high {
					np = torrent.PiecePriorityHigh
				}
			}
			if ps.prio[p] != np {
				ps.prio[p] = np
				s.t.Piece(p).SetPriority(np)
			}
		}
	}
}

// runPicker keeps s's piece priorities to what ps.pk wants, every
// pickEvery, until s has every chunk or is dropped. wantAll, once closed,
// has it want everything (the web seed was added: no peer's terms to
// keep to). A round on every piece change instead cost the node as much
// CPU as the smaller scan saved the engine (a profile at N = 16).
func (s *Session) runPicker(ps *pickState, wantAll <-chan struct{}) {
	tick := time.NewTicker(pickEvery)
	defer tick.Stop()
	last := s.store.missingPieces()
	since := time.Now()
	all := false
	for {
		select {
		case <-s.t.Closed():
			return
		case <-wantAll:
			all, wantAll = true, nil
		case <-tick.C:
		}
		m := s.store.missingPieces()
		if m == 0 {
			return
		}
		if m != last {
			last, since = m, time.Now()
		}
		s.round(ps, all || time.Since(since) > pickIdle)
	}
}
