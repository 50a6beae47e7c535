package swarm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"github.com/imprint-dev/imprint/image"
)

// Target is where a content's chunks go: a partition.
type Target interface {
	io.ReaderAt
	io.WriterAt
}

// Place is one content on the target: its chunks are written at i x chunk
// size. Have says chunk i is there already (checked); Done is called once
// chunk i has been written and checked, never for a chunk Have said was
// there at the start.
type Place struct {
	Content *image.Content
	Target  Target
	Have    func(i int) bool
	Done    func(i int)
	// Copied, when set, is called instead of Done for a chunk copied at
	// the start from another of this node's places that held it (checked
	// as Done's are): written now, but not by the swarm, so a caller that
	// counts what the swarm gave can tell the two apart.
	Copied func(i int)
}

type loc struct {
	place int
	chunk int
	off   int64
	// had: the place said it held the chunk (Have) at the start; it is
	// not told again (Done).
	had bool
}

// chunkState is one chunk's state on this node.
type chunkState struct {
	locs []loc
	// mu serialises the whole-chunk check of the pieces that complete it.
	mu sync.Mutex
	// done: checked against the manifest's SHA-256, written to every
	// place, Done called; its bytes are never written again.
	done atomic.Bool
}

// pieceState is one piece's state on this node.
type pieceState struct {
	complete atomic.Bool // the engine's view (Completion)
	good     atomic.Bool // its bytes hashed to the torrent's hash since last written
	badPad   atomic.Bool // a block beyond the chunk's end was not zeros
}

// pieceStore is the storage of one torrent: pieces are written straight
// to the first place their chunk occurs at (one that did not hold it at
// the start: copyHeld), checked there; once all the
// pieces of a chunk are, the chunk is checked whole against the
// manifest's SHA-256, then copied to its other places.
type pieceStore struct {
	t      *Torrent
	places []Place
	cs     []chunkState // by chunk
	ps     []pieceState // by piece
	failed atomic.Int64 // pieces (or whole chunks) that did not check
	// heldWrong counts chunks a place said it held that could not be
	// read or did not check: fetched again.
	heldWrong atomic.Int64
	// recheck, when set, has the engine read the completion of pieces
	// again (a chunk whose pieces checked but whose whole did not). It
	// must not block: the engine calls the store with its locks held.
	recheck func(pieces []int)
	// closing guards the target against the engine's peer reads and
	// writes, which it does not wait for when it drops the torrent: once
	// closed (Close returns before Drop does), none touches the target,
	// so the caller may close it.
	closing sync.RWMutex
	closed  bool
	// corrupt, in tests, makes this node serve flipped bytes.
	corrupt bool
	// blame remembers who sent which block, to ban a corrupting peer.
	blame blame
}

func newPieceStore(t *Torrent, places []Place) (*pieceStore, error) {
	s := &pieceStore{t: t, places: places, cs: make([]chunkState, len(t.Chunks)), ps: make([]pieceState, t.NumPieces())}
	for pi, pl := range places {
		for i, sum := range pl.Content.Chunks {
			if sum == image.ZeroChunk {
				continue
			}
			k, ok := t.Index[sum]
			if !ok {
				return nil, fmt.Errorf("chunk %s is not in the image's torrent", sum)
			}
			s.cs[k].locs = append(s.cs[k].locs, loc{place: pi, chunk: i, off: int64(i) * t.ChunkSize})
		}
	}
	for k := range s.cs {
		c := &s.cs[k]
		had := 0
		for i := range c.locs {
			l := &c.locs[i]
			h := places[l.place].Have
			l.had = h != nil && h(l.chunk)
			if l.had {
				had++
			}
		}
		all := len(c.locs) > 0 && had == len(c.locs)
		if had > 0 && !all {
			var err error
			if all, err = s.copyHeld(k); err != nil {
				return nil, err
			}
		}
		c.done.Store(all)
		first, end := t.pieces(k)
		for p := first; p < end; p++ {
			// A piece wholly in the padding is zeros, held everywhere.
			held := all || t.pieceLen(p) == 0
			s.ps[p].complete.Store(held)
			s.ps[p].good.Store(held)
		}
	}
	return s, nil
}

// copyHeld takes chunk k, held at some of its places but not all, from
// one that holds it: checked against the manifest's SHA-256, it is
// copied to the others, which are told (Done). If it does not check
// (the holder was wrong), false: k is fetched, and its first place,
// where peers' unchecked bytes land, is one that did not hold it, so
// that a chunk held is never overwritten but by checked bytes.
func (s *pieceStore) copyHeld(k int) (bool, error) {
	c := &s.cs[k]
	// Places that lack it first (stable: the order is otherwise the
	// image's).
	sort.SliceStable(c.locs, func(i, j int) bool { return !c.locs[i].had && c.locs[j].had })
	var from loc
	for _, l := range c.locs {
		if l.had {
			from = l
			break
		}
	}
	data := make([]byte, s.t.Chunks[k].Length)
	// A holder that cannot be read is treated as one that was wrong: the
	// chunk is fetched (and written over it once checked). Failing here
	// would turn the whole swarm off for one bad sector.
	if _, err := s.places[from.place].Target.ReadAt(data, from.off); err != nil || image.HashBytes(data) != s.t.Chunks[k].Sum {
		s.heldWrong.Add(1)
		return false, nil
	}
	for _, l := range c.locs {
		if l.had {
			continue
		}
		if _, err := s.places[l.place].Target.WriteAt(data, l.off); err != nil {
			return false, err
		}
	}
	s.tell(c, true)
	return true, nil
}

// tell calls Done (or, for a copy from a place that held it, Copied when
// set) for each place of c that did not hold it at the start.
func (s *pieceStore) tell(c *chunkState, copied bool) {
	for _, l := range c.locs {
		if l.had {
			continue
		}
		pl := s.places[l.place]
		d := pl.Done
		if copied && pl.Copied != nil {
			d = pl.Copied
		}
		if d != nil {
			d(l.chunk)
		}
	}
}

// needs says this node lacks chunk k.
func (s *pieceStore) needs(k int) bool {
	return len(s.cs[k].locs) > 0 && !s.cs[k].done.Load()
}

// missingBytes sums the bytes of the needed pieces not complete.
func (s *pieceStore) missingBytes() int64 {
	n := int64(0)
	for k := range s.cs {
		if !s.needs(k) {
			continue
		}
		first, end := s.t.pieces(k)
		for p := first; p < end; p++ {
			if !s.ps[p].complete.Load() {
				n += s.t.pieceLen(p)
			}
		}
	}
	return n
}

// missing counts the chunks not done.
func (s *pieceStore) missing() int {
	n := 0
	for k := range s.cs {
		if s.needs(k) {
			n++
		}
	}
	return n
}

// checkChunk is called when piece p of chunk k hashed good: if every
// piece of k now has, k is checked whole against the manifest (whole is
// its bytes when p is the whole chunk, else nil: read from the target),
// copied to its other places, and its places told (Done). false: the
// whole did not check, and none of its pieces counts as good any more;
// or p was cleared so by such a check while it waited.
func (s *pieceStore) checkChunk(k, p int, whole []byte) (bool, error) {
	c := &s.cs[k]
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done.Load() {
		return true, nil
	}
	if !s.ps[p].good.Load() {
		// Another piece's failed check of the whole chunk cleared p
		// while p waited: it is taken again.
		return false, nil
	}
	first, end := s.t.pieces(k)
	for q := first; q < end; q++ {
		if !s.ps[q].good.Load() {
			return true, nil // not all of it yet
		}
	}
	data := whole
	if data == nil {
		data = make([]byte, s.t.Chunks[k].Length)
		l := c.locs[0]
		if _, err := s.places[l.place].Target.ReadAt(data, l.off); err != nil {
			return false, err
		}
	}
	if image.HashBytes(data) != s.t.Chunks[k].Sum {
		// Every piece checked, the whole did not: take all of them again.
		var again []int
		for q := first; q < end; q++ {
			if s.t.pieceLen(q) == 0 {
				continue
			}
			s.ps[q].good.Store(false)
			if q != p {
				s.ps[q].complete.Store(false)
				again = append(again, q)
			}
		}
		s.failed.Add(1)
		if len(again) > 0 && s.recheck != nil {
			s.recheck(again)
		}
		return false, nil
	}
	// Checked: now it goes to every other place the chunk occurs at,
	// before it counts.
	for _, l := range c.locs[1:] {
		if _, err := s.places[l.place].Target.WriteAt(data, l.off); err != nil {
			return false, err
		}
	}
	c.done.Store(true)
	s.tell(c, false)
	return true, nil
}

// OpenTorrent implements storage.ClientImpl.
func (s *pieceStore) OpenTorrent(_ context.Context, info *metainfo.Info, ih metainfo.Hash) (storage.TorrentImpl, error) {
	if ih != s.t.Hash {
		return storage.TorrentImpl{}, fmt.Errorf("storage for %s opened for %s", s.t.Hash, ih)
	}
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl { return &piece{s: s, i: p.Index()} },
		Close: func() error {
			s.closing.Lock()
			s.closed = true
			s.closing.Unlock()
			return nil
		},
	}, nil
}

type piece struct {
	s *pieceStore
	i int
}

func (p *piece) state() *pieceState { return &p.s.ps[p.i] }
func (p *piece) length() int64      { return p.s.t.pieceLen(p.i) }
func (p *piece) chunk() *chunkState {
	k, _ := p.s.t.chunkOf(p.i)
	return &p.s.cs[k]
}

// first is where the piece's bytes live on this node.
func (p *piece) first() (Target, int64, bool) {
	k, in := p.s.t.chunkOf(p.i)
	c := &p.s.cs[k]
	if len(c.locs) == 0 {
		return nil, 0, false
	}
	l := c.locs[0]
	return p.s.places[l.place].Target, l.off + in, true
}

// WriteAt takes a block from a peer: the part inside the chunk goes to
// its first place; the padding must be zeros. A chunk done is not
// written again.
func (p *piece) WriteAt(b []byte, off int64) (int, error) {
	n := len(b)
	l := p.length()
	if off+int64(n) > l {
		pad := b
		if off < l {
			pad = b[l-off:]
		}
		if !image.IsZero(pad) {
			p.state().badPad.Store(true)
		}
		if off >= l {
			return n, nil
		}
		b = b[:l-off]
	}
	p.s.closing.RLock()
	defer p.s.closing.RUnlock()
	if p.s.closed || p.chunk().done.Load() {
		return n, nil
	}
	t, base, ok := p.first()
	if !ok {
		// A piece this node does not need (another partition set): keep
		// nothing, it never completes here.
		return n, nil
	}
	p.state().good.Store(false)
	if _, err := t.WriteAt(b, base+off); err != nil {
		return 0, err
	}
	return n, nil
}

// ReadAt serves a block of a piece this node has checked.
func (p *piece) ReadAt(b []byte, off int64) (int, error) {
	l := p.length()
	n := len(b)
	p.s.closing.RLock()
	defer p.s.closing.RUnlock()
	if p.s.closed {
		// The torrent is dropped and its connections with it: nothing
		// read now is sent. An error here would crash the process: the
		// engine (v1.59.1) panics on a failed read for a closed torrent.
		clear(b)
		return n, nil
	}
	k := 0
	if off < l {
		t, base, ok := p.first()
		if !ok {
			return 0, fmt.Errorf("piece %d: not held here", p.i)
		}
		m := min(int64(n), l-off)
		if _, err := t.ReadAt(b[:m], base+off); err != nil {
			return 0, err
		}
		k = int(m)
	}
	clear(b[k:])
	if p.s.corrupt && k > 0 {
		b[0] ^= 0xff
	}
	return n, nil
}

// SelfHash checks the piece against the signed manifest. With the
// swarm-pieces extension, the padded piece must hash to the torrent's
// (signed) piece hash; when it is a chunk's last piece to check, the
// whole chunk must then hash to the manifest's SHA-256. Without it, the
// piece is the chunk, checked against that SHA-256 (and its padding must
// be zeros). The engine compares the answer with the torrent's piece
// hash, so only a piece that checks is taken.
func (p *piece) SelfHash() (metainfo.Hash, error) {
	st := p.state()
	bad := st.badPad.Swap(false)
	k, _ := p.s.t.chunkOf(p.i)
	t, base, ok := p.first()
	if !ok {
		return metainfo.Hash{}, fmt.Errorf("piece %d: not held here", p.i)
	}
	buf := make([]byte, p.length())
	if len(buf) > 0 {
		if _, err := t.ReadAt(buf, base); err != nil {
			return metainfo.Hash{}, err
		}
	}
	fail := func() (metainfo.Hash, error) {
		p.s.failed.Add(1)
		return metainfo.Hash{}, nil
	}
	if bad {
		return fail()
	}
	var whole []byte
	if p.s.t.sub {
		h := sha256.New()
		h.Write(buf)
		image.WriteZeros(h, p.s.t.PieceLength-int64(len(buf)))
		if sum := h.Sum(nil); !bytes.Equal(sum[:20], p.s.t.Info.Pieces[p.i*20:p.i*20+20]) {
			return fail()
		}
	} else {
		whole = buf
	}
	st.good.Store(true)
	ok, err := p.s.checkChunk(k, p.i, whole)
	if err != nil {
		return metainfo.Hash{}, err
	}
	if !ok {
		return metainfo.Hash{}, nil // counted by checkChunk
	}
	p.s.blame.passed(p.i, buf)
	return p.s.t.pieceHash(p.i), nil
}

// MarkComplete is called once the piece checked (its chunk's places are
// told when the chunk checks whole: checkChunk).
func (p *piece) MarkComplete() error {
	st := p.state()
	if !st.good.Load() {
		// Its chunk failed the whole check after this piece passed
		// (checkChunk cleared it): it is not complete, and the engine,
		// which records the completion itself once this returns, is told
		// again.
		if p.s.recheck != nil {
			p.s.recheck([]int{p.i})
		}
		return nil
	}
	st.complete.Store(true)
	return nil
}

func (p *piece) MarkNotComplete() error {
	// A chunk every place already holds, checked, stays complete: an
	// on-demand node takes a chunk from its sources (OnDemand.Have)
	// while a peer's copy is being hashed, and that copy failing must not
	// make the node refuse a chunk it holds and has announced. So does a
	// chunk done here, which is never written again, and a padding piece.
	if p.chunk().done.Load() || p.heldEverywhere() || p.length() == 0 {
		return nil
	}
	p.state().complete.Store(false)
	p.state().good.Store(false)
	return nil
}

// heldEverywhere says every place of the piece's chunk says it holds it.
func (p *piece) heldEverywhere() bool {
	c := p.chunk()
	if len(c.locs) == 0 {
		return false
	}
	for _, l := range c.locs {
		h := p.s.places[l.place].Have
		if h == nil || !h(l.chunk) {
			return false
		}
	}
	return true
}

func (p *piece) Completion() storage.Completion {
	return storage.Completion{Ok: true, Complete: p.state().complete.Load()}
}
