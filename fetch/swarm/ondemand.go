package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"

	"github.com/imprint-dev/imprint/image"
)

// ErrNotFromPeers says the swarm did not give a chunk asked for on
// demand: no connected peer has it, or the peers that have it gave no
// byte of it for OnDemandOptions.Quiet (or not all of it within Most).
// The caller takes it from its HTTP sources.
var ErrNotFromPeers = errors.New("not from the swarm's peers")

// OnDemandOptions bound how long a read waits for the swarm.
type OnDemandOptions struct {
	// Quiet is how long a chunk may go without a byte from the peers
	// before it is given up on [1s].
	Quiet time.Duration
	// Most is how long a chunk may take from the peers at all, however
	// they trickle [5s, or the chunk's length at 1 MiB/s when that is
	// longer: a 64 MiB chunk cannot come in 5 s over 100 Mbit/s]: a read
	// never hangs on the swarm.
	Most time.Duration
	// Connect is how long a node that holds no chunk and has no peer yet
	// waits for a peer that has the chunk asked for [300ms]: the engine
	// connects to no peer for a torrent it neither needs a piece of nor
	// holds one of, so a node's first reads are what make it connect.
	// Once it holds a chunk (its first, from the sources or from peers),
	// it stays connected and a chunk no peer has goes to the sources at
	// once.
	Connect time.Duration
}

// OnDemand is this node in the swarm of an image whose partition is read
// on demand (a diskless root): nothing is fetched until a read asks for a
// chunk (Chunk), and then only that chunk, first thing; every chunk it
// holds, from peers or handed in after another fetch (Have), is kept in
// RAM and offered to peers for as long as the node is in the swarm. It
// never drops a chunk it announced, so peers never ask it for one it
// lost. Chunks come in as the engine's pieces, each checked against the
// manifest's SHA-256 by the same storage as a deploy's (storage.go):
// a byte Chunk returns has been checked.
type OnDemand struct {
	cl  *torrent.Client
	s   *Session
	ram *ramTarget
	o   OnDemandOptions
	// mostSet: the caller set Most, which then holds for every size.
	mostSet bool

	mu    sync.Mutex
	wants map[int]int // by piece: callers of Chunk waiting for it

	fromPeers atomic.Int64 // bytes of chunks Chunk gave from peers
	gotChunks atomic.Int64
}

// JoinOnDemand enters the swarm of image m (the server's tracker only,
// no web seed: the caller's sources are the fallback) to read content,
// one of m's partitions, on demand.
func (n *Node) JoinOnDemand(m *image.Manifest, content *image.Content, server string, o OnDemandOptions) (*OnDemand, error) {
	if o.Quiet <= 0 {
		o.Quiet = time.Second
	}
	mostSet := o.Most >= o.Quiet
	if !mostSet {
		o.Most = max(5*time.Second, o.Quiet)
	}
	if o.Connect <= 0 {
		o.Connect = 300 * time.Millisecond
	}
	tor, err := FromManifest(m)
	if err != nil {
		return nil, err
	}
	// The store's one place is the torrent itself, chunk k at k x chunk
	// size, holding the chunks of content only (the others are zero
	// chunks to it: it never takes or offers them).
	in := map[string]bool{}
	for _, sum := range content.Chunks {
		in[sum] = true
	}
	pieces := &image.Content{Chunks: make([]string, len(tor.Chunks))}
	for k, c := range tor.Chunks {
		pieces.Chunks[k] = image.ZeroChunk
		if in[c.Sum] {
			pieces.Chunks[k] = c.Sum
		}
	}
	ram := newRAMTarget(tor)
	st, err := newPieceStore(tor, []Place{{Content: pieces, Target: ram, Done: ram.checked, Have: ram.isGood}})
	if err != nil {
		return nil, err
	}
	s, err := n.add(m, tor, st, server)
	if err != nil {
		return nil, err
	}
	// Every piece keeps the engine's default priority, none: the engine
	// takes a piece only while a read waits for it (Chunk). A root read on
	// demand lacks pieces for as long as it runs: it looks for peers
	// every so often while it has fewer than it may.
	if server != "" {
		n.startReannounce(s, server)
	}
	return &OnDemand{cl: n.cl, s: s, ram: ram, o: o, mostSet: mostSet, wants: map[int]int{}}, nil
}

// Chunk gives the checked bytes of chunk sum from this node's RAM or its
// peers, or ErrNotFromPeers (at once when no connected peer has it). The
// bytes must not be modified: peers are served from them.
func (d *OnDemand) Chunk(ctx context.Context, sum string) ([]byte, error) {
	p, ok := d.s.Tor.Index[sum]
	if !ok || len(d.s.store.cs[p].locs) == 0 {
		return nil, fmt.Errorf("chunk %s: not in this partition's pieces: %w", sum, ErrNotFromPeers)
	}
	got, done := d.ram.wait(p)
	if got != nil {
		return got, nil
	}
	// A node that holds a chunk keeps its peers: if none of them has
	// this one, the sources are asked at once. One that holds none has
	// no peers yet; asking for the chunk makes it look for some.
	connecting := !d.peerHas(p)
	if held, _ := d.ram.held(); connecting && (held > 0 || len(d.s.t.PeerConns()) > 0) {
		return nil, fmt.Errorf("chunk %s: no connected peer has it: %w", sum, ErrNotFromPeers)
	}
	d.want(p, true)
	defer d.want(p, false)
	start := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			b, _ := d.ram.wait(p)
			d.fromPeers.Add(int64(len(b)))
			d.gotChunks.Add(1)
			return b, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case now := <-tick.C:
			if connecting {
				// A peer that sent a block of it and went (banned for a
				// bad piece, say) was there: the wait for bytes applies.
				if !d.peerHas(p) && d.ram.lastWrite(p).IsZero() {
					if now.Sub(start) >= d.o.Connect {
						return nil, fmt.Errorf("chunk %s: no peer that has it within %v: %w", sum, d.o.Connect, ErrNotFromPeers)
					}
					continue
				}
				// Its time starts now that a peer that has it is there.
				connecting, start = false, now
			}
			last := d.ram.lastWrite(p)
			if last.Before(start) {
				last = start
			}
			if now.Sub(last) >= d.o.Quiet {
				return nil, fmt.Errorf("chunk %s: no byte from the peers for %v: %w", sum, d.o.Quiet, ErrNotFromPeers)
			}
			if most := d.most(p); now.Sub(start) >= most {
				return nil, fmt.Errorf("chunk %s: not whole from the peers within %v: %w", sum, most, ErrNotFromPeers)
			}
		}
	}
}

// minPeerRate is the slowest whole-chunk rate Most allows for by
// default: a large chunk gets the time it needs at this rate.
const minPeerRate = 1 << 20 // bytes per second

// most is how long chunk p may take from the peers: Most, or the chunk's
// length at minPeerRate when that is longer and Most was not set.
func (d *OnDemand) most(p int) time.Duration {
	if d.mostSet {
		return d.o.Most
	}
	return max(d.o.Most, time.Duration(d.s.Tor.Chunks[p].Length*int64(time.Second)/minPeerRate))
}

// want raises the priority of chunk p's pieces while a read waits for
// it, and lowers it again when none does: a chunk given up on is not
// fetched on.
func (d *OnDemand) want(p int, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	before := d.wants[p]
	if on {
		d.wants[p]++
	} else if d.wants[p]--; d.wants[p] == 0 {
		delete(d.wants, p)
	}
	prio := torrent.PiecePriorityNone
	switch after := d.wants[p]; {
	case before == 0 && after > 0:
		prio = torrent.PiecePriorityNow
	case before > 0 && after == 0:
	default:
		return
	}
	first, end := d.s.Tor.pieces(p)
	for q := first; q < end; q++ {
		if d.s.Tor.pieceLen(q) > 0 {
			d.s.t.Piece(q).SetPriority(prio)
		}
	}
}

// peerHas says whether a connected peer says it has all of chunk p.
func (d *OnDemand) peerHas(p int) bool {
	first, end := d.s.Tor.pieces(p)
peers:
	for _, pc := range d.s.t.PeerConns() {
		have := pc.PeerPieces()
		for q := first; q < end; q++ {
			if d.s.Tor.pieceLen(q) > 0 && !have.Contains(uint32(q)) {
				continue peers
			}
		}
		return true
	}
	return false
}

// Have hands in chunk sum's bytes, checked by the caller against the
// manifest (fetched from the sources): the node keeps them and offers
// them to peers. data must not be modified afterwards. It returns the
// bytes the node holds for the chunk: data, or the copy a peer gave
// meanwhile (the caller keeps that one, not a second); nil for a chunk
// not in this swarm.
func (d *OnDemand) Have(sum string, data []byte) []byte {
	p, ok := d.s.Tor.Index[sum]
	st := d.s.store
	if !ok || len(st.cs[p].locs) == 0 || int64(len(data)) != d.s.Tor.Chunks[p].Length {
		return nil
	}
	held, taken := d.ram.have(p, data)
	if !taken {
		return held
	}
	st.cs[p].mu.Lock()
	st.cs[p].done.Store(true)
	st.cs[p].mu.Unlock()
	first, end := d.s.Tor.pieces(p)
	for q := first; q < end; q++ {
		// Blocks peers sent for it are judged now: a sender of a bad
		// one is banned, and the record goes.
		_, off := d.s.Tor.chunkOf(q)
		if l := d.s.Tor.pieceLen(q); l > 0 {
			st.blame.passed(q, data[off:off+l])
		}
		st.ps[q].good.Store(true)
		st.ps[q].complete.Store(true)
		d.s.t.Piece(q).UpdateCompletion()
	}
	return held
}

// OnDemandStats say what the node did in the swarm.
type OnDemandStats struct {
	FromPeers   int64 // bytes of chunks given to reads from peers
	PeerChunks  int64
	HandedIn    int64 // bytes given by Have (from the sources)
	Held        int64 // bytes held and offered to peers
	Uploaded    int64 // bytes of piece data sent to peers
	Peers       int   // peers connected now
	FailedCheck int64 // pieces from peers that did not check
}

// Stats says what the node did so far.
func (d *OnDemand) Stats() OnDemandStats {
	st := d.s.t.Stats()
	held, handedIn := d.ram.held()
	return OnDemandStats{
		FromPeers:   d.fromPeers.Load(),
		PeerChunks:  d.gotChunks.Load(),
		HandedIn:    handedIn,
		Held:        held,
		Uploaded:    st.BytesWrittenData.Int64(),
		Peers:       len(d.s.t.PeerConns()),
		FailedCheck: d.s.Failed(),
	}
}

// WriteStatus writes the engine's view of the node (its peers, their
// request states): for a failure's report.
func (d *OnDemand) WriteStatus(w io.Writer) { d.cl.WriteStatus(w) }

// Leave drops the swarm: nothing more is offered or taken.
func (d *OnDemand) Leave() { d.s.Leave() }

// ramTarget holds an on-demand node's chunks in RAM, chunk p at p x
// chunk size (here "piece" p is chunk p of the torrent, whatever its
// piece length). A chunk's blocks from peers go to its scratch buffer;
// once the store checked them (checked, the place's Done, when all its
// pieces and then the whole checked) the buffer becomes the chunk's
// bytes, never written again: reads and peers are given those only.
type ramTarget struct {
	t *Torrent

	mu      sync.Mutex
	good    map[int][]byte
	scratch map[int][]byte
	last    map[int]time.Time     // when a block of the piece last came
	ready   map[int]chan struct{} // closed once good
	bytes   int64
	// handedIn counts bytes given by Have (from the sources), under mu
	// with bytes, so that a report's two figures agree.
	handedIn int64
}

func newRAMTarget(t *Torrent) *ramTarget {
	return &ramTarget{t: t, good: map[int][]byte{}, scratch: map[int][]byte{}, last: map[int]time.Time{}, ready: map[int]chan struct{}{}}
}

// at maps a torrent offset to its piece and the offset in it.
func (r *ramTarget) at(off int64) (p int, in int64, err error) {
	p = int(off / r.t.ChunkSize)
	if off < 0 || p >= len(r.t.Chunks) {
		return 0, 0, fmt.Errorf("offset %d is beyond the torrent's %d chunks", off, len(r.t.Chunks))
	}
	return p, off - int64(p)*r.t.ChunkSize, nil
}

// WriteAt takes a block of a piece from a peer (the store passes only the
// part within the chunk). A piece already held ignores it.
func (r *ramTarget) WriteAt(b []byte, off int64) (int, error) {
	p, in, err := r.at(off)
	if err != nil {
		return 0, err
	}
	l := r.t.Chunks[p].Length
	if in+int64(len(b)) > l {
		return 0, fmt.Errorf("piece %d: a write of %d bytes at %d is beyond its %d bytes", p, len(b), in, l)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.good[p] != nil {
		return len(b), nil
	}
	buf := r.scratch[p]
	if buf == nil {
		buf = make([]byte, l)
		r.scratch[p] = buf
	}
	copy(buf[in:], b)
	r.last[p] = time.Now()
	return len(b), nil
}

// ReadAt reads a held piece (for peers) or the scratch of one being
// checked (for the store's check); bytes not written read as zeros.
func (r *ramTarget) ReadAt(b []byte, off int64) (int, error) {
	p, in, err := r.at(off)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	src := r.good[p]
	if src == nil {
		src = r.scratch[p]
	}
	var n int
	if in < int64(len(src)) {
		n = copy(b, src[in:])
	}
	r.mu.Unlock()
	clear(b[n:])
	return len(b), nil
}

// checked is the store's word that piece p's scratch hashed to the
// manifest's SHA-256: it becomes the piece's bytes.
func (r *ramTarget) checked(p int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.good[p] != nil || r.scratch[p] == nil {
		return
	}
	r.setGood(p, r.scratch[p])
}

// have makes data piece p's bytes unless it has some; it gives the
// piece's bytes and whether they are data.
func (r *ramTarget) have(p int, data []byte) (held []byte, taken bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g := r.good[p]; g != nil {
		return g, false
	}
	r.setGood(p, data)
	r.handedIn += int64(len(data))
	return data, true
}

// isGood says piece p's bytes are held.
func (r *ramTarget) isGood(p int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.good[p] != nil
}

func (r *ramTarget) setGood(p int, data []byte) {
	r.good[p] = data
	r.bytes += int64(len(data))
	delete(r.scratch, p)
	delete(r.last, p)
	if ch := r.ready[p]; ch != nil {
		close(ch)
		delete(r.ready, p)
	}
}

// wait gives piece p's bytes if held, else a channel closed once they are.
func (r *ramTarget) wait(p int) ([]byte, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b := r.good[p]; b != nil {
		return b, nil
	}
	ch := r.ready[p]
	if ch == nil {
		ch = make(chan struct{})
		r.ready[p] = ch
	}
	return nil, ch
}

func (r *ramTarget) lastWrite(p int) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[p]
}

// held gives the bytes held and, of them, those handed in (Have), in
// one snapshot.
func (r *ramTarget) held() (held, handedIn int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes, r.handedIn
}
