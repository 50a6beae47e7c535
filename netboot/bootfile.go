package netboot

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/image"
)

// DefaultBootCache bounds the decoded chunks of boot files and loaders kept
// between requests. A rack's kernel and initrd fit many times over; a
// larger set is decoded again as it is read, not held twice.
const DefaultBootCache = 256 << 20

// ErrTooLarge says a boot file's manifest claims more bytes than any boot
// file may have: it is refused, not streamed.
var ErrTooLarge = errors.New("boot file is larger than the limit")

// chunkLoadTimeout bounds one chunk's fetch and decode. The load runs for
// every reader waiting on the chunk, so it is not tied to the client that
// happened to ask first.
const chunkLoadTimeout = 2 * time.Minute

// chunkCache holds decoded, checked chunks by name. Each chunk is loaded
// once however many readers ask for it at the same time (they wait for the
// first), and a chunk in use by a reader stays in the map, so no chunk is
// ever held twice. Chunks nobody reads are kept, least recently used first
// out, while their bytes stay under max.
type chunkCache struct {
	max int64

	mu      sync.Mutex
	entries map[string]*cacheEntry
	idle    list.List // of *cacheEntry with refs == 0, most recent first
	idleLen int64     // bytes of the idle entries
}

type cacheEntry struct {
	sum   string
	refs  int
	ready chan struct{}
	data  []byte
	err   error
	elem  *list.Element // in idle, when refs == 0
}

func newChunkCache(max int64) *chunkCache {
	if max <= 0 {
		max = DefaultBootCache
	}
	return &chunkCache{max: max, entries: map[string]*cacheEntry{}}
}

// get returns chunk sum, loading it with load unless it is cached or being
// loaded; the caller must release it.
func (c *chunkCache) get(ctx context.Context, sum string, load func(context.Context) ([]byte, error)) (*cacheEntry, error) {
	c.mu.Lock()
	e, ok := c.entries[sum]
	if ok {
		if e.refs == 0 && e.elem != nil {
			c.idle.Remove(e.elem)
			e.elem = nil
			c.idleLen -= int64(len(e.data))
		}
		e.refs++
		c.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			c.release(e)
			return nil, ctx.Err()
		}
		if e.err != nil {
			c.release(e)
			return nil, e.err
		}
		return e, nil
	}
	e = &cacheEntry{sum: sum, refs: 1, ready: make(chan struct{})}
	c.entries[sum] = e
	c.mu.Unlock()

	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), chunkLoadTimeout)
	e.data, e.err = load(lctx)
	cancel()
	if e.err != nil {
		// A failed load is not remembered: the next reader tries again.
		c.mu.Lock()
		delete(c.entries, sum)
		c.mu.Unlock()
	}
	close(e.ready)
	if e.err != nil {
		c.release(e)
		return nil, e.err
	}
	return e, nil
}

func (c *chunkCache) release(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs > 0 || e.err != nil {
		return
	}
	if c.entries[e.sum] != e {
		return
	}
	e.elem = c.idle.PushFront(e)
	c.idleLen += int64(len(e.data))
	for c.idleLen > c.max {
		old := c.idle.Back().Value.(*cacheEntry)
		c.idle.Remove(old.elem)
		old.elem = nil
		c.idleLen -= int64(len(old.data))
		delete(c.entries, old.sum)
	}
}

// contentReader reads one content straight from its chunks, each checked
// against its name as it is decoded (the chunk list is the manifest's, so
// the bytes are the manifest's). It is the io.ReadSeeker
// http.ServeContent needs for Range and HEAD, and never holds more than
// the one chunk it is in.
type contentReader struct {
	ctx       context.Context
	cache     *chunkCache
	load      func(ctx context.Context, sum string, n int64) ([]byte, error)
	content   *image.Content
	chunkSize int64

	off int64
	cur *cacheEntry
	idx int
}

var zeros [64 << 10]byte

func (r *contentReader) Read(p []byte) (int, error) {
	size := r.content.Size
	if r.off >= size {
		return 0, io.EOF
	}
	i := int(r.off / r.chunkSize)
	if i >= len(r.content.Chunks) {
		return 0, fmt.Errorf("%w: offset %d is past the %d chunks listed", image.ErrFormat, r.off, len(r.content.Chunks))
	}
	in := r.off - int64(i)*r.chunkSize
	n := r.content.ChunkLen(i, r.chunkSize)
	sum := r.content.Chunks[i]
	if sum == image.ZeroChunk {
		w := copy(p, zeros[:min(int64(len(zeros)), n-in)])
		r.off += int64(w)
		return w, nil
	}
	if r.cur == nil || r.idx != i {
		r.drop()
		e, err := r.cache.get(r.ctx, sum, func(ctx context.Context) ([]byte, error) { return r.load(ctx, sum, n) })
		if err != nil {
			return 0, err
		}
		r.cur, r.idx = e, i
	}
	w := copy(p, r.cur.data[in:])
	r.off += int64(w)
	return w, nil
}

func (r *contentReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.content.Size
	default:
		return 0, fmt.Errorf("seek: bad whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek: negative offset %d", offset)
	}
	r.off = offset
	return offset, nil
}

func (r *contentReader) drop() {
	if r.cur != nil {
		r.cache.release(r.cur)
		r.cur = nil
	}
}

// Close lets go of the chunk the reader is in.
func (r *contentReader) Close() error {
	r.drop()
	return nil
}
