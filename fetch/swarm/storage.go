package swarm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
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
// chunk i has been written and checked.
type Place struct {
	Content *image.Content
	Target  Target
	Have    func(i int) bool
	Done    func(i int)
}

type loc struct {
	place int
	chunk int
	off   int64
}

// pieceState is one piece's state on this node.
type pieceState struct {
	locs     []loc
	complete atomic.Bool
	badPad   atomic.Bool // a block beyond the chunk's end was not zeros
}

// pieceStore is the storage of one torrent: pieces are written straight
// to the first place their chunk occurs at, checked there, then copied
// to its other places.
type pieceStore struct {
	t      *Torrent
	places []Place
	ps     []pieceState
	failed atomic.Int64 // pieces that did not check
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
	s := &pieceStore{t: t, places: places, ps: make([]pieceState, len(t.Pieces))}
	for pi, pl := range places {
		for i, sum := range pl.Content.Chunks {
			if sum == image.ZeroChunk {
				continue
			}
			p, ok := t.Index[sum]
			if !ok {
				return nil, fmt.Errorf("chunk %s is not in the image's torrent", sum)
			}
			s.ps[p].locs = append(s.ps[p].locs, loc{place: pi, chunk: i, off: int64(i) * t.ChunkSize})
		}
	}
	for p := range s.ps {
		st := &s.ps[p]
		all := len(st.locs) > 0
		for _, l := range st.locs {
			if h := places[l.place].Have; h == nil || !h(l.chunk) {
				all = false
				break
			}
		}
		st.complete.Store(all)
	}
	return s, nil
}

// missingBytes sums the lengths of the pieces not complete.
func (s *pieceStore) missingBytes() int64 {
	n := int64(0)
	for p := range s.ps {
		if len(s.ps[p].locs) > 0 && !s.ps[p].complete.Load() {
			n += s.t.Pieces[p].Length
		}
	}
	return n
}

// missing counts the pieces not complete.
func (s *pieceStore) missing() int {
	n := 0
	for p := range s.ps {
		if len(s.ps[p].locs) > 0 && !s.ps[p].complete.Load() {
			n++
		}
	}
	return n
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
func (p *piece) length() int64      { return p.s.t.Pieces[p.i].Length }

// first is where the piece's bytes live on this node.
func (p *piece) first() (Target, int64, bool) {
	st := p.state()
	if len(st.locs) == 0 {
		return nil, 0, false
	}
	l := st.locs[0]
	return p.s.places[l.place].Target, l.off, true
}

// WriteAt takes a block from a peer: the part inside the chunk goes to
// its first place; the padding must be zeros.
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
	if p.s.closed {
		return n, nil
	}
	t, base, ok := p.first()
	if !ok {
		// A piece this node does not need (another partition set): keep
		// nothing, it never completes here.
		return n, nil
	}
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

// SelfHash checks the piece against the manifest: the chunk's bytes must
// hash to its SHA-256 (and the padding be zeros). The engine compares the
// answer with the torrent's piece hash, which is the first 20 bytes of
// that SHA-256, so only a chunk that checks is taken.
func (p *piece) SelfHash() (metainfo.Hash, error) {
	st := p.state()
	bad := st.badPad.Swap(false)
	t, base, ok := p.first()
	if !ok {
		return metainfo.Hash{}, fmt.Errorf("piece %d: not held here", p.i)
	}
	buf := make([]byte, p.length())
	if _, err := t.ReadAt(buf, base); err != nil {
		return metainfo.Hash{}, err
	}
	sum := sha256.Sum256(buf)
	if bad || hex.EncodeToString(sum[:]) != p.s.t.Pieces[p.i].Sum {
		p.s.failed.Add(1)
		return metainfo.Hash{}, nil
	}
	p.s.blame.passed(p.i, buf)
	// Checked: now it goes to every other place the chunk occurs at,
	// before it counts.
	for _, l := range st.locs[1:] {
		if _, err := p.s.places[l.place].Target.WriteAt(buf, l.off); err != nil {
			return metainfo.Hash{}, err
		}
	}
	return p.s.t.pieceHash(p.i), nil
}

// MarkComplete is called once the piece checked.
func (p *piece) MarkComplete() error {
	st := p.state()
	if st.complete.Swap(true) {
		return nil
	}
	for _, l := range st.locs {
		if d := p.s.places[l.place].Done; d != nil {
			d(l.chunk)
		}
	}
	return nil
}

func (p *piece) MarkNotComplete() error {
	// A chunk every place already holds, checked, stays complete: an
	// on-demand node takes a chunk from its sources (OnDemand.Have)
	// while a peer's copy is being hashed, and that copy failing must not
	// make the node refuse a chunk it holds and has announced.
	if p.heldEverywhere() {
		return nil
	}
	p.state().complete.Store(false)
	return nil
}

// heldEverywhere says every place of the piece says it holds its chunk.
func (p *piece) heldEverywhere() bool {
	st := p.state()
	if len(st.locs) == 0 {
		return false
	}
	for _, l := range st.locs {
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
