// Package ondemand reads an image's partition chunk by chunk as it is
// read: a chunk is fetched the first time any byte of it is asked for
// (through fetch, so from whichever source has it, peers included),
// checked against the manifest's SHA-256 before a byte of it is given
// out, and kept in a RAM cache bounded in bytes (least recently used
// goes first). All-zero chunks are answered without fetching; readers of
// a chunk being fetched wait for that one fetch. When no source gives a
// chunk, it waits and asks again, saying so, for as long as its context
// lasts: a block device under a mounted root has no better answer than
// "later".
package ondemand

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
)

// Options say what to read and how.
type Options struct {
	Content   *image.Content
	ChunkSize int64
	Fetcher   *fetch.Fetcher
	Decoder   *image.Decoder
	// CacheBytes bounds the chunks kept in RAM. A chunk larger than the
	// bound is still fetched and read, just not kept.
	CacheBytes int64
	// Logf hears about waits for sources (and their end); nil: quiet.
	Logf func(format string, args ...any)
	// RetryMin and RetryMax bound the pause between rounds of asking
	// every source again for a chunk none gave [1s, 30s].
	RetryMin, RetryMax time.Duration
	// OnFetch hears about every chunk fetched (index, bytes).
	OnFetch func(i int, n int64)
}

// Stats count what the reader did.
type Stats struct {
	FetchedBytes  int64 // uncompressed bytes of chunks fetched (and checked)
	FetchedChunks int
	Refetched     int   // chunks fetched again after the cache dropped them
	CachedBytes   int64 // bytes in the cache now
	Hits          int64 // chunk lookups answered by the cache
	ZeroReads     int64 // chunk lookups answered as zeros
}

// Reader is the partition, read on demand. Safe for concurrent use.
type Reader struct {
	o Options

	mu       sync.Mutex
	lru      *list.List // of *entry, most recently used first
	cached   map[int]*list.Element
	inflight map[int]*call
	seen     map[int]bool // chunks fetched at least once
	st       Stats
}

type entry struct {
	i    int
	data []byte
}

type call struct {
	done chan struct{}
	data []byte
	err  error
}

// New makes a Reader over o.Content.
func New(o Options) (*Reader, error) {
	if o.Content == nil || o.Fetcher == nil || o.Decoder == nil {
		return nil, fmt.Errorf("ondemand: content, fetcher and decoder are required")
	}
	if o.ChunkSize <= 0 {
		return nil, fmt.Errorf("ondemand: chunk size %d", o.ChunkSize)
	}
	if want := (o.Content.Size + o.ChunkSize - 1) / o.ChunkSize; int64(len(o.Content.Chunks)) != want {
		return nil, fmt.Errorf("ondemand: %d chunks for %d bytes of %d, want %d", len(o.Content.Chunks), o.Content.Size, o.ChunkSize, want)
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(30*time.Second, o.RetryMin)
	}
	return &Reader{o: o, lru: list.New(), cached: map[int]*list.Element{}, inflight: map[int]*call{}, seen: map[int]bool{}}, nil
}

// Size is the partition's size in bytes.
func (r *Reader) Size() int64 { return r.o.Content.Size }

// Stats says what the reader did so far.
func (r *Reader) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

// ReadAt fills p with the partition's bytes at off.
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > r.o.Content.Size {
		return fmt.Errorf("ondemand: read of %d bytes at %d is outside the partition's %d bytes", len(p), off, r.o.Content.Size)
	}
	cs := r.o.ChunkSize
	for len(p) > 0 {
		i := int(off / cs)
		in := off - int64(i)*cs
		n := min(int64(len(p)), r.o.Content.ChunkLen(i, cs)-in)
		if r.o.Content.Chunks[i] == image.ZeroChunk {
			clear(p[:n])
			r.mu.Lock()
			r.st.ZeroReads++
			r.mu.Unlock()
		} else {
			data, err := r.chunk(ctx, i)
			if err != nil {
				return err
			}
			copy(p[:n], data[in:in+n])
		}
		p, off = p[n:], off+n
	}
	return nil
}

// chunk gives chunk i's checked bytes: from the cache, from the fetch
// already running for it, or fetched now. The bytes are never written
// after they are checked, so callers may read them after the cache let
// go of them.
func (r *Reader) chunk(ctx context.Context, i int) ([]byte, error) {
	r.mu.Lock()
	if el, ok := r.cached[i]; ok {
		r.lru.MoveToFront(el)
		r.st.Hits++
		data := el.Value.(*entry).data
		r.mu.Unlock()
		return data, nil
	}
	if c, ok := r.inflight[i]; ok {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.data, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &call{done: make(chan struct{})}
	r.inflight[i] = c
	r.mu.Unlock()

	// The fetch runs under the first caller's ctx. Under the NBD server
	// every caller has the server's, so one ending ends them all anyway;
	// elsewhere a waiter gets the cancelled caller's error and may ask
	// again.
	c.data, c.err = r.fetch(ctx, i)

	r.mu.Lock()
	delete(r.inflight, i)
	if c.err == nil {
		r.st.FetchedBytes += int64(len(c.data))
		r.st.FetchedChunks++
		if r.seen[i] {
			r.st.Refetched++
		}
		r.seen[i] = true
		r.insert(i, c.data)
	}
	r.mu.Unlock()
	close(c.done)
	if c.err == nil && r.o.OnFetch != nil {
		r.o.OnFetch(i, int64(len(c.data)))
	}
	return c.data, c.err
}

// insert adds chunk i to the cache and drops the least recently used
// chunks until the cache fits its bound. Called with r.mu held.
func (r *Reader) insert(i int, data []byte) {
	if int64(len(data)) > r.o.CacheBytes {
		return
	}
	r.cached[i] = r.lru.PushFront(&entry{i: i, data: data})
	r.st.CachedBytes += int64(len(data))
	for r.st.CachedBytes > r.o.CacheBytes {
		el := r.lru.Back()
		e := el.Value.(*entry)
		r.lru.Remove(el)
		delete(r.cached, e.i)
		r.st.CachedBytes -= int64(len(e.data))
	}
}

// fetch gets chunk i from the sources, checked; when none gives it, it
// says so and asks them all again after a pause that doubles up to
// RetryMax, until ctx ends.
func (r *Reader) fetch(ctx context.Context, i int) ([]byte, error) {
	sum := r.o.Content.Chunks[i]
	n := r.o.Content.ChunkLen(i, r.o.ChunkSize)
	pause := r.o.RetryMin
	var waited time.Duration
	for round := 1; ; round++ {
		var data []byte
		err := r.o.Fetcher.Chunk(ctx, sum, n, nil, func(stored []byte) error {
			d, err := r.o.Decoder.Decode(stored, sum, n, nil)
			if err != nil {
				return err
			}
			data = d
			return nil
		})
		if err == nil {
			if round > 1 {
				r.logf("chunk %d fetched after waiting %v for the sources; reads go on", i, waited.Round(time.Second))
			}
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.logf("chunk %d: %v; the reads that need it wait, asking every source again in %v", i, err, pause)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		waited += pause
		pause = min(2*pause, r.o.RetryMax)
	}
}

func (r *Reader) logf(format string, args ...any) {
	if r.o.Logf != nil {
		r.o.Logf(format, args...)
	}
}
