package ondemand

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
)

// Slices say where the signed pieces of an image's swarm torrent are
// (the imprint.swarm-pieces extension, image.SwarmPieces) and how much a
// miss fetches (Options.Slices). With them, a read that misses fetches
// the window of pieces around it, not its whole chunk, from a source's
// web seed (`imprint serve`'s /swarm/data/NAME/VERSION: the torrent's
// bytes, uncompressed) in one Range request, and checks each piece
// against its signed hash before a byte of it is given out. The guest
// pays SHA-256 for the bytes it fetched and no zstd: a boot reads a
// quarter of the bytes of the 1 MiB chunks it touches
// (docs/performance.md).
type Slices struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// PieceLength is the extension's piece length: it divides the chunk
	// size, so every piece lies inside one chunk.
	PieceLength int64 `json:"piece_length"`
	// Window is what a miss fetches: the aligned run of pieces of this
	// many bytes around it, inside its chunk; a multiple of PieceLength.
	Window int64 `json:"window"`
	// Torrent[i] is chunk i's index among the torrent's chunks
	// (image.TorrentChunks); -1 for a zero chunk.
	Torrent []int `json:"torrent"`
	// Hashes are the extension's: image.PieceHashLen bytes a piece of
	// the whole torrent.
	Hashes []byte `json:"hashes"`
}

// DefaultWindow is imprint.slice= when the command line does not say:
// two 64 KiB pieces a miss (docs/performance.md, "Signed pieces").
const DefaultWindow = 128 << 10

// SlicesOf gives the Slices of content c, one of m's partitions, for
// windows of window bytes (rounded up to whole pieces, at most a chunk):
// nil when window is 0 or m has no swarm-pieces extension, an error
// (image.ErrFormat) when the extension is malformed. m's signature was
// checked by the caller.
func SlicesOf(m *image.Manifest, c *image.Content, window int64) (*Slices, error) {
	if window <= 0 {
		return nil, nil
	}
	sp, ok, err := m.SwarmPieces()
	if !ok || err != nil {
		return nil, err
	}
	if c == nil {
		return nil, fmt.Errorf("ondemand: a partition of %s:%s without content", m.Name, m.Version)
	}
	chunks, err := m.TorrentChunks()
	if err != nil {
		return nil, err
	}
	index := make(map[string]int, len(chunks))
	for k, c := range chunks {
		index[c.Sum] = k
	}
	window = min((window+sp.PieceLength-1)/sp.PieceLength*sp.PieceLength, m.ChunkSize)
	s := &Slices{Name: m.Name, Version: m.Version, PieceLength: sp.PieceLength, Window: window, Hashes: sp.Hashes}
	for _, sum := range c.Chunks {
		k, ok := index[sum]
		if sum == image.ZeroChunk || !ok {
			k = -1
		}
		s.Torrent = append(s.Torrent, k)
	}
	return s, nil
}

// check says whether s fits c's chunks of chunkSize bytes.
func (s *Slices) check(c *image.Content, chunkSize int64) error {
	pl := s.PieceLength
	switch {
	case pl < image.MinPieceLength || pl&(pl-1) != 0 || chunkSize%pl != 0:
		return fmt.Errorf("ondemand: piece length %d for chunks of %d", pl, chunkSize)
	case s.Window < pl || s.Window%pl != 0 || s.Window > chunkSize:
		return fmt.Errorf("ondemand: a window of %d bytes for pieces of %d and chunks of %d", s.Window, pl, chunkSize)
	case len(s.Torrent) != len(c.Chunks):
		return fmt.Errorf("ondemand: torrent places for %d chunks, the partition has %d", len(s.Torrent), len(c.Chunks))
	}
	per := chunkSize / pl
	for i, sum := range c.Chunks {
		t := s.Torrent[i]
		if (sum == image.ZeroChunk) != (t < 0) || int64(t+1)*per*image.PieceHashLen > int64(len(s.Hashes)) {
			return fmt.Errorf("ondemand: chunk %d has torrent place %d (%d bytes of piece hashes)", i, t, len(s.Hashes))
		}
	}
	return nil
}

// errNoSlice says a window's pieces could not be had: the read takes the
// chunk whole, from the chunk path (its failover and its wait).
var errNoSlice = errors.New("no pieces")

// sliced says whether chunk i's reads go by pieces: slices are on, some
// source serves the web seed, and the chunk is not in RAM whole already.
func (r *Reader) sliced(i int) bool {
	if r.sl == nil || r.cache.Has(whole(i)) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.slicesOff
}

// readSlices fills p with chunk i's bytes at in, window by window.
// errNoSlice: the caller reads the chunk whole.
func (r *Reader) readSlices(ctx context.Context, p []byte, i int, in int64) error {
	win := r.sl.Window
	for len(p) > 0 {
		w := int(in / win)
		data, err := r.window(ctx, i, w)
		if err != nil {
			return err
		}
		k := copy(p, data[in-int64(w)*win:])
		p, in = p[k:], in+int64(k)
	}
	return nil
}

// window gives window w of chunk i, checked: from the cache, the fetch
// already running for it, or fetched now. Windows are kept by the
// chunk's place in the torrent, so a chunk at two offsets is fetched once.
func (r *Reader) window(ctx context.Context, i, w int) ([]byte, error) {
	return r.cached(ctx, ckey{r.sl.Torrent[i], w}, i, true, func(ctx context.Context) ([]byte, error) { return r.loadWindow(ctx, i, w) })
}

// loadWindow fetches window w of chunk i from a web seed: the pieces
// from its start to the window's end or the last piece holding the
// chunk's bytes (a short last chunk's padding is not fetched), each
// checked against its signed hash. The fetch is watched and said as a
// chunk's is; it is one try, bounded in time (fetch.Options.WebSeedTimeout),
// as the chunk path, with its failover and its wait, takes over when it
// fails.
func (r *Reader) loadWindow(ctx context.Context, i, w int) ([]byte, error) {
	s, cs := r.sl, r.o.ChunkSize
	pl := s.PieceLength
	start := int64(w) * s.Window
	end := min(start+s.Window, (r.o.Content.ChunkLen(i, cs)+pl-1)/pl*pl)
	off := int64(s.Torrent[i])*cs + start
	first, n := off/pl, (end-start)/pl
	what := fmt.Sprintf("pieces %d-%d (bytes %d-%d of chunk %d) of %s:%s", first, first+n-1, start, end-1, i, s.Name, s.Version)
	var data []byte
	stop := r.watch(what, true)
	err := r.o.Fetcher.Slice(ctx, s.Name, s.Version, off, end-start, what, func(b []byte) error {
		// The length first: a WebSeeder is anyone's, and a short answer
		// would check no piece at all.
		if int64(len(b)) != end-start {
			return fmt.Errorf("%w: %d bytes for %d pieces of %d", image.ErrFormat, len(b), n, pl)
		}
		for k := int64(0); k < n; k++ {
			got := sha256.Sum256(b[k*pl : (k+1)*pl])
			want := s.Hashes[(first+k)*image.PieceHashLen : (first+k+1)*image.PieceHashLen]
			if !bytes.Equal(got[:image.PieceHashLen], want) {
				r.mu.Lock()
				r.st.PiecesRefused++
				r.mu.Unlock()
				return fmt.Errorf("%w: piece %d (bytes %d-%d of chunk %d) hashes to %x, the image says %x",
					image.ErrChecksum, first+k, start+k*pl, start+(k+1)*pl-1, i, got[:image.PieceHashLen], want)
			}
		}
		data = b
		return nil
	})
	if stop() {
		r.endWait(what, err == nil)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.noSlice(i, err)
		return nil, fmt.Errorf("%w: %w", errNoSlice, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seedGone {
		r.seedGone = false
		r.logf("signed pieces from the web seed again, from %s", what)
	}
	r.st.FetchedBytes += int64(len(data))
	r.st.PieceBytes += int64(len(data))
	r.st.Pieces += int(n)
	r.st.PieceRequests++
	key := ckey{s.Torrent[i], w}
	if r.seen[key] {
		r.st.Refetched++
	}
	r.seen[key] = true
	return data, nil
}

// noSlice counts and says that a window could not be had (err) and chunk i
// is read whole: when no source serves the web seed (for good: reads
// stop asking for pieces), when every web seed is off for now, once
// each time; otherwise at most once every SayEvery (an outage fails
// every window).
func (r *Reader) noSlice(i int, err error) {
	now := time.Now()
	r.mu.Lock()
	r.st.PieceFallbacks++
	var say string
	switch {
	case errors.Is(err, fetch.ErrNoWebSeed):
		if !r.slicesOff {
			say = fmt.Sprintf("no source serves the swarm web seed of %s:%s (%v); reading whole chunks", r.sl.Name, r.sl.Version, err)
		}
		r.slicesOff = true
	case errors.Is(err, fetch.ErrWebSeedOff):
		if !r.seedGone {
			say = fmt.Sprintf("%v; reading whole chunks until a web seed is back", err)
		}
		r.seedGone = true
	case now.Sub(r.lastSlice) >= r.o.SayEvery:
		r.lastSlice = now
		say = fmt.Sprintf("%v; reading chunk %d whole", err, i)
	}
	r.mu.Unlock()
	if say != "" {
		r.logf("%s", say)
	}
}
