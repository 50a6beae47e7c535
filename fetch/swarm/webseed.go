package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// WebSeed serves the bytes of image torrents (BEP 19, "GetRight" web
// seeds: plain HTTP Range reads of the torrent's single file) from a
// store: the store's chunk files are zstd, so each chunk is decoded and
// checked against its SHA-256 before a byte of it is sent. Requests for
// the same chunk (the engine asks 16 KiB blocks) share one decode: the
// last CacheChunks chunks are kept.
//
// Its path is NAME/VERSION below wherever it is mounted.
type WebSeed struct {
	Src store.Source
	// CacheChunks decoded chunks are kept [16].
	CacheChunks int

	once   sync.Once
	dec    *image.Decoder
	decErr error
	mu     sync.Mutex
	tor    map[string]*Torrent // name/version -> torrent
	chunks map[string]*cached
	lru    []string
}

type cached struct {
	ready chan struct{}
	data  []byte
	err   error
}

// Close frees the decoder.
func (ws *WebSeed) Close() {
	if ws.dec != nil {
		ws.dec.Close()
	}
}

func (ws *WebSeed) torrent(ctx context.Context, name, version string) (*Torrent, error) {
	key := name + "/" + version
	ws.mu.Lock()
	t := ws.tor[key]
	ws.mu.Unlock()
	if t != nil {
		return t, nil
	}
	res, err := store.Resolve(ctx, ws.Src, name, version)
	if err != nil {
		return nil, err
	}
	if t, err = FromManifest(res.Manifest); err != nil {
		return nil, err
	}
	ws.mu.Lock()
	if ws.tor == nil {
		ws.tor = map[string]*Torrent{}
	}
	ws.tor[key] = t
	ws.mu.Unlock()
	return t, nil
}

// chunk gives the decoded, checked bytes of chunk p.
func (ws *WebSeed) chunk(ctx context.Context, t *Torrent, p int) ([]byte, error) {
	ws.once.Do(func() { ws.dec, ws.decErr = image.NewDecoder() })
	if ws.decErr != nil {
		return nil, ws.decErr
	}
	pc := t.Chunks[p]
	ws.mu.Lock()
	if ws.chunks == nil {
		ws.chunks = map[string]*cached{}
	}
	c := ws.chunks[pc.Sum]
	if c == nil {
		c = &cached{ready: make(chan struct{})}
		ws.chunks[pc.Sum] = c
		ws.lru = append(ws.lru, pc.Sum)
		limit := ws.CacheChunks
		if limit <= 0 {
			limit = 16
		}
		for len(ws.lru) > limit {
			delete(ws.chunks, ws.lru[0])
			ws.lru = ws.lru[1:]
		}
		ws.mu.Unlock()
		stored, err := ws.Src.Chunk(ctx, pc.Sum)
		if err == nil {
			c.data, err = ws.dec.Decode(stored, pc.Sum, pc.Length, nil)
		}
		c.err = err
		close(c.ready)
		if err != nil {
			ws.mu.Lock()
			if ws.chunks[pc.Sum] == c {
				delete(ws.chunks, pc.Sum)
			}
			ws.mu.Unlock()
		}
	} else {
		ws.mu.Unlock()
	}
	select {
	case <-c.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return c.data, c.err
}

// ServeHTTP serves GET/HEAD NAME/VERSION with Range.
func (ws *WebSeed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, version, ok := strings.Cut(strings.Trim(r.URL.Path, "/"), "/")
	if !ok || image.ValidName(name) != nil || image.ValidName(version) != nil {
		http.Error(w, "want NAME/VERSION", http.StatusNotFound)
		return
	}
	t, err := ws.torrent(r.Context(), name, version)
	switch {
	case errors.Is(err, store.ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	rd := &seedReader{ctx: r.Context(), ws: ws, t: t, size: t.Info.Length}
	// The bytes of an image version never change.
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("ETag", `"`+t.Hash.HexString()+`"`)
	http.ServeContent(w, r, "", time.Time{}, rd)
	if rd.err != nil {
		// ServeContent has sent the headers; the client sees a short body
		// and tries elsewhere.
		_ = rd.err
	}
}

// seedReader reads the torrent's file: piece after piece, each padded
// with zeros to the piece length.
type seedReader struct {
	ctx  context.Context
	ws   *WebSeed
	t    *Torrent
	off  int64
	size int64
	err  error
}

func (s *seedReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += s.off
	case io.SeekEnd:
		off += s.size
	}
	if off < 0 {
		return 0, fmt.Errorf("seek to %d", off)
	}
	s.off = off
	return off, nil
}

func (s *seedReader) Read(b []byte) (int, error) {
	if s.off >= s.size {
		return 0, io.EOF
	}
	cs := s.t.ChunkSize
	p := int(s.off / cs)
	in := s.off % cs
	n := min(int64(len(b)), cs-in)
	data, err := s.ws.chunk(s.ctx, s.t, p)
	if err != nil {
		s.err = err
		return 0, err
	}
	var k int64
	if in < int64(len(data)) {
		k = int64(copy(b[:n], data[in:]))
	}
	clear(b[k:n])
	s.off += n
	return int(n), nil
}
