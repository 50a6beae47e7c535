// Package copier moves chunks onto a target: fetch (package fetch picks
// the source), decompress, verify, write at the chunk's offset; then reads
// the target back and proves every chunk.
package copier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
	"golang.org/x/sync/errgroup"
)

// ErrDrift says content read back from a target differs from the manifest.
var ErrDrift = errors.New("content differs from the manifest")

// Target is where content is written: a partition on a disk.
type Target interface {
	io.ReaderAt
	io.WriterAt
	// ZeroRange makes a range read as zeros exactly, even on a reused device.
	ZeroRange(off, n int64) error
}

// Copier writes and verifies image content.
type Copier struct {
	// Fetch decides which source gives which chunk; every answer is
	// decompressed and checked here before it counts, so sources are
	// never trusted.
	Fetch *fetch.Fetcher
	// Sources, when Fetch is nil, are asked through a Fetcher with the
	// default options.
	Sources   []store.Source
	Dec       *image.Decoder
	ChunkSize int64
	// Workers run the whole fetch-decode-check-write path each, so both
	// cores decode while others wait on I/O. 0 means twice the CPUs, or
	// as many as keep InFlight bytes moving if that is more.
	Workers int

	once sync.Once
	f    *fetch.Fetcher
}

func (c *Copier) fetcher() *fetch.Fetcher {
	c.once.Do(func() {
		c.f = c.Fetch
		if c.f == nil {
			c.f = fetch.New(c.Sources, fetch.Options{})
		}
	})
	return c.f
}

// BytesFrom says how many bytes of chunks came from each source.
func (c *Copier) BytesFrom() []int64 { return c.fetcher().BytesFrom() }

// get fetches chunk sum of length l, decoded into buf and checked against
// its name; storedBuf, when not nil, holds the stored bytes for sources
// that can read into it.
func (c *Copier) get(ctx context.Context, sum string, l int64, buf []byte, storedBuf []byte) ([]byte, error) {
	var data []byte
	err := c.fetcher().Chunk(ctx, sum, l, storedBuf, func(stored []byte) error {
		d, err := c.Dec.Decode(stored, sum, l, buf)
		data = d
		return err
	})
	return data, err
}

// InFlight is how many bytes of chunks the default workers keep in
// flight: 4 workers of 4 MiB chunks, what the copier was tuned with on 2
// CPUs. Each worker has one chunk-sized O_DIRECT write or read, or one
// request, outstanding at a time, so at smaller chunks it takes more
// workers to keep as many bytes queued at the device and as few round
// trips per byte on a network (docs/chunk-size.md).
const InFlight = 16 << 20

func (c *Copier) workers() int {
	if c.Workers > 0 {
		return c.Workers
	}
	n := 2 * runtime.NumCPU()
	if c.ChunkSize > 0 {
		n = max(n, int(InFlight/c.ChunkSize))
	}
	return n
}

// Hooks let the caller follow and steer a copy.
type Hooks struct {
	// Skip says chunk i is already on the target and proven (resume).
	Skip func(i int) bool
	// Done is called after chunk i is written (not yet synced), from
	// several workers at once.
	Done func(i int)
	// Progress gets byte counts as chunks complete or are skipped.
	Progress func(n int64)
	// Written, if set, records what was written for VerifyWritten.
	Written *Written
}

// Write puts content onto dst. Every chunk is checked against its SHA-256
// before any of its bytes are written; a bad chunk stops the copy with an
// image.ErrChecksum error naming it.
//
// On a partition of a Disk (a target with a Backing file) chunks are
// written with O_DIRECT: copying every byte into fresh page-cache pages was
// the largest cost of a deploy, and the page cache is of no use for data
// that is not read again soon.
func (c *Copier) Write(ctx context.Context, content *image.Content, dst Target, h Hooks) error {
	n := len(content.Chunks)
	pool := image.NewBufPool(int(c.ChunkSize))
	// Stored chunks are at most a little larger than the chunk size (zstd
	// stores incompressible blocks raw, with a 3-byte header per 128 KiB).
	storedPool := image.NewBufPool(int(c.ChunkSize + c.ChunkSize/64 + 4096))
	dio := openDirect(dst, true)
	defer dio.close()
	// The work is listed first, so that Skip is asked once per chunk and
	// the space for the data chunks is allocated before any write is in
	// flight: an allocation waits for all O_DIRECT writes in flight on the
	// file.
	todo := make([]int, 0, n)
	for i := range n {
		if h.Skip != nil && h.Skip(i) {
			if h.Progress != nil {
				h.Progress(content.ChunkLen(i, c.ChunkSize))
			}
			continue
		}
		todo = append(todo, i)
	}
	for k := 0; k < len(todo); k++ {
		first := todo[k]
		if content.Chunks[first] == image.ZeroChunk {
			continue
		}
		for k+1 < len(todo) && todo[k+1] == todo[k]+1 && content.Chunks[todo[k+1]] != image.ZeroChunk {
			k++
		}
		last := todo[k]
		off := int64(first) * c.ChunkSize
		dio.prealloc(off, int64(last)*c.ChunkSize+content.ChunkLen(last, c.ChunkSize)-off)
	}
	// Consecutive zero chunks go as one span, zeroed with one call: on a
	// block device each is a BLKZEROOUT, and a 1 MiB one per chunk of a
	// mostly empty partition was thousands of small requests.
	zeroRun := max(1, int(ZeroRun/c.ChunkSize))
	idx := make(chan span)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(idx)
		for k := 0; k < len(todo); {
			sp := span{first: todo[k], n: 1}
			if content.Chunks[sp.first] == image.ZeroChunk {
				for k+sp.n < len(todo) && sp.n < zeroRun && todo[k+sp.n] == sp.first+sp.n && content.Chunks[todo[k+sp.n]] == image.ZeroChunk {
					sp.n++
				}
			}
			k += sp.n
			select {
			case idx <- sp:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range c.workers() {
		g.Go(func() error {
			for sp := range idx {
				var err error
				if content.Chunks[sp.first] == image.ZeroChunk {
					err = c.zeroSpan(content, sp, dst)
				} else {
					err = c.writeChunk(gctx, content, sp.first, dst, dio, pool, storedPool, h.Written)
				}
				if err != nil {
					return err
				}
				for i := sp.first; i < sp.first+sp.n; i++ {
					if h.Done != nil {
						h.Done(i)
					}
					if h.Progress != nil {
						h.Progress(content.ChunkLen(i, c.ChunkSize))
					}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// ZeroRun is the most bytes of consecutive zero chunks Write zeroes in one
// call.
const ZeroRun = 64 << 20

// span is n consecutive chunks from first.
type span struct{ first, n int }

// bounds is the byte range of sp within the content.
func (c *Copier) bounds(content *image.Content, sp span) (off, n int64) {
	off = int64(sp.first) * c.ChunkSize
	last := sp.first + sp.n - 1
	return off, int64(last)*c.ChunkSize + content.ChunkLen(last, c.ChunkSize) - off
}

// zeroSpan makes a span of zero chunks read as zeros.
func (c *Copier) zeroSpan(content *image.Content, sp span, dst Target) error {
	off, l := c.bounds(content, sp)
	if isHole(dst, off, l) {
		// A hole of an image file (a new one is all holes) reads as
		// zeros already; punching it again would wait for every
		// O_DIRECT write in flight on the file.
		return nil
	}
	if err := dst.ZeroRange(off, l); err != nil {
		if sp.n == 1 {
			return fmt.Errorf("zero chunk %d at %d: %w", sp.first, off, err)
		}
		return fmt.Errorf("zero chunks %d-%d at %d: %w", sp.first, sp.first+sp.n-1, off, err)
	}
	return nil
}

func (c *Copier) writeChunk(ctx context.Context, content *image.Content, i int, dst Target, dio *direct, pool, storedPool *image.BufPool, w *Written) error {
	off := int64(i) * c.ChunkSize
	l := content.ChunkLen(i, c.ChunkSize)
	sum := content.Chunks[i]
	buf := pool.Get()
	defer pool.Put(buf)
	stored := storedPool.Get()
	data, err := c.get(ctx, sum, l, *buf, *stored)
	storedPool.Put(stored)
	if err != nil {
		return fmt.Errorf("chunk %d: %w", i, err)
	}
	done, err := dio.writeAt(data, off)
	if !done && err == nil {
		_, err = dst.WriteAt(data, off)
	}
	if err != nil {
		return fmt.Errorf("write chunk %d at %d: %w", i, off, err)
	}
	w.add(i, data)
	return nil
}

// Verify reads content back from src and returns the indexes of chunks
// that differ from the manifest: a data chunk whose SHA-256 is not the
// manifest's, a zero chunk that does not read as zeros. The chunk list
// covers the content exactly, so when every chunk matches, src holds the
// content the signed manifest describes, byte for byte; the manifest's
// whole-content sha256 adds nothing to that and is not computed here (it
// cost a third of a deploy's CPU, most of it hashing zero chunks;
// docs/format.md, "content.sha256"). VerifyFull computes it too.
func (c *Copier) Verify(ctx context.Context, content *image.Content, src io.ReaderAt, progress func(int64)) ([]int, error) {
	return c.verify(ctx, content, src, nil, progress, false)
}

// VerifyWritten is Verify right after Write with Hooks.Written set to w:
// a chunk w recorded is compared with what was written (its bytes were
// proven against the manifest before they were written); any other chunk
// (written by an earlier, interrupted run, or by another path) is checked
// against its SHA-256 as Verify does.
func (c *Copier) VerifyWritten(ctx context.Context, content *image.Content, src io.ReaderAt, w *Written, progress func(int64)) ([]int, error) {
	return c.verify(ctx, content, src, w, progress, false)
}

// VerifyFull is Verify that, when every chunk matches, also hashes the
// whole content read back and compares it with the manifest's content
// sha256: a manifest whose chunk list does not add up to its own content
// hash is refused (image.ErrInconsistent), whoever made it.
func (c *Copier) VerifyFull(ctx context.Context, content *image.Content, src io.ReaderAt, progress func(int64)) ([]int, error) {
	return c.verify(ctx, content, src, nil, progress, true)
}

func (c *Copier) verify(ctx context.Context, content *image.Content, src io.ReaderAt, w *Written, progress func(int64), full bool) ([]int, error) {
	n := len(content.Chunks)
	pool := image.NewBufPool(int(c.ChunkSize))
	dio := openDirect(src, false)
	defer dio.close()
	bad := make([]bool, n)
	workers := c.workers()
	// With full, the whole-content hash takes chunks in order while
	// workers finish out of order. Tokens are taken in index order by the
	// dispatcher, so the chunk the hash waits for always holds one, and at
	// most 2*workers buffers wait for their turn.
	tokens := make(chan struct{}, 2*workers)
	type piece struct {
		i   int
		buf *[]byte // nil: l zero bytes (a hole)
		l   int64
	}
	pieces := make(chan piece, 2*workers)
	// emit hands a checked chunk to the whole-content hash, or frees it.
	emit := func(p piece) {
		if full {
			pieces <- p
		} else if p.buf != nil {
			pool.Put(p.buf)
		}
	}
	idx := make(chan int)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(idx)
		for i := range n {
			if full {
				select {
				case tokens <- struct{}{}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			select {
			case idx <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	whole := sha256.New()
	seqDone := make(chan error, 1)
	if full {
		go func() {
			pending := map[int]piece{}
			next := 0
			for p := range pieces {
				pending[p.i] = p
				for q, ok := pending[next]; ok; q, ok = pending[next] {
					if q.buf != nil {
						whole.Write((*q.buf)[:q.l])
						pool.Put(q.buf)
					} else {
						image.WriteZeros(whole, q.l)
					}
					delete(pending, next)
					next++
					<-tokens
				}
			}
			for _, q := range pending {
				if q.buf != nil {
					pool.Put(q.buf)
				}
			}
			if next != n {
				seqDone <- fmt.Errorf("verify: %d of %d chunks hashed", next, n)
				return
			}
			seqDone <- nil
		}()
	}
	var mu sync.Mutex
	for range workers {
		g.Go(func() error {
			for i := range idx {
				l := content.ChunkLen(i, c.ChunkSize)
				if content.Chunks[i] == image.ZeroChunk && isHole(src, int64(i)*c.ChunkSize, l) {
					// A hole reads as zeros by the filesystem's guarantee:
					// nothing to read.
					emit(piece{i: i, l: l})
					if progress != nil {
						progress(l)
					}
					continue
				}
				buf := pool.Get()
				b := (*buf)[:l]
				done, err := dio.readAt(b, int64(i)*c.ChunkSize)
				if !done && err == nil {
					_, err = src.ReadAt(b, int64(i)*c.ChunkSize)
				}
				if err != nil && !(errors.Is(err, io.EOF) && len(b) == 0) {
					pool.Put(buf)
					return fmt.Errorf("read chunk %d: %w", i, err)
				}
				var ok bool
				if content.Chunks[i] == image.ZeroChunk {
					// A compare, not a hash: a zero chunk is proven by
					// reading as zeros.
					ok = image.IsZero(b)
				} else if recorded, same := w.matches(i, b); recorded {
					ok = same
				} else {
					ok = image.HashBytes(b) == content.Chunks[i]
				}
				emit(piece{i: i, buf: buf, l: l})
				if !ok {
					mu.Lock()
					bad[i] = true
					mu.Unlock()
				}
				if progress != nil {
					progress(l)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	close(pieces)
	var seqErr error
	if full {
		seqErr = <-seqDone
	}
	if err != nil {
		return nil, err
	}
	var out []int
	for i, b := range bad {
		if b {
			out = append(out, i)
		}
	}
	if len(out) > 0 || !full {
		return out, nil
	}
	if seqErr != nil {
		return nil, seqErr
	}
	if sum := hex.EncodeToString(whole.Sum(nil)); sum != content.SHA256 {
		return nil, fmt.Errorf("%w: every chunk matches the manifest, but together they hash to %s and the manifest's content sha256 is %s", image.ErrInconsistent, sum, content.SHA256)
	}
	return nil, nil
}

// holer is a reader that knows its holes (an image file).
type holer interface {
	Hole(off, n int64) bool
}

func isHole(r io.ReaderAt, off, n int64) bool {
	h, ok := r.(holer)
	return ok && h.Hole(off, n)
}

// memTarget collects content in memory.
type memTarget []byte

func (m memTarget) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m memTarget) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }
func (m memTarget) ZeroRange(off, n int64) error             { clear(m[off : off+n]); return nil }

// ReadContent fetches a whole content into memory, every chunk checked,
// then the whole against the content's SHA-256: for boot artifacts and
// loaders, which are small.
func (c *Copier) ReadContent(ctx context.Context, content *image.Content) ([]byte, error) {
	if content == nil {
		return nil, nil
	}
	buf := make(memTarget, content.Size)
	if err := c.Write(ctx, content, buf, Hooks{}); err != nil {
		return nil, err
	}
	if sum := image.HashBytes(buf); sum != content.SHA256 {
		return nil, fmt.Errorf("%w: the assembled content hashes to %s, the manifest says %s", image.ErrInconsistent, sum, content.SHA256)
	}
	return buf, nil
}
