package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"runtime"

	"golang.org/x/sync/errgroup"
)

// ChunkSink receives chunks while content is being stored.
type ChunkSink interface {
	PutChunk(sum string, data []byte) (stored bool, err error)
}

// StoreStats counts what StoreContent did.
type StoreStats struct {
	Chunks, Zero, New int
	NewBytes          int64 // uncompressed bytes of chunks that were not yet stored
}

// StoreContent cuts size bytes of r into chunkSize pieces, stores every
// non-zero piece in sink and returns the content description. Reading is
// sequential (it also feeds the whole-content hash); hashing, compression
// and storing run on all cores. progress, if set, gets byte counts as they
// are read.
func StoreContent(ctx context.Context, sink ChunkSink, r io.ReaderAt, size, chunkSize int64, progress func(int64)) (*Content, StoreStats, error) {
	n := int((size + chunkSize - 1) / chunkSize)
	c := &Content{Size: size, Chunks: make([]string, n)}
	stats := make([]chunkResult, n)
	whole := sha256.New()
	pool := NewBufPool(int(chunkSize))

	type job struct {
		i   int
		buf *[]byte
		n   int64
	}
	jobs := make(chan job, runtime.NumCPU())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for i := range n {
			l := c.ChunkLen(i, chunkSize)
			b := pool.Get()
			if _, err := r.ReadAt((*b)[:l], int64(i)*chunkSize); err != nil && err != io.EOF {
				pool.Put(b)
				return fmt.Errorf("read at %d: %w", int64(i)*chunkSize, err)
			}
			whole.Write((*b)[:l])
			select {
			case jobs <- job{i, b, l}:
			case <-gctx.Done():
				pool.Put(b)
				return gctx.Err()
			}
			if progress != nil {
				progress(l)
			}
		}
		return nil
	})
	for range runtime.NumCPU() {
		g.Go(func() error {
			for j := range jobs {
				data := (*j.buf)[:j.n]
				if IsZero(data) {
					c.Chunks[j.i] = ZeroChunk
					stats[j.i] = chunkResult{zero: true}
					pool.Put(j.buf)
					continue
				}
				sum := HashBytes(data)
				stored, err := sink.PutChunk(sum, data)
				pool.Put(j.buf)
				if err != nil {
					return err
				}
				c.Chunks[j.i] = sum
				stats[j.i] = chunkResult{stored: stored, n: j.n}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, StoreStats{}, err
	}
	c.SHA256 = hex.EncodeToString(whole.Sum(nil))
	st := StoreStats{Chunks: n}
	// A chunk that repeats within the content is stored by whichever
	// worker gets there first, not necessarily at its first place: count
	// it once if any of its places stored it.
	stored := map[string]int64{}
	for i, r := range stats {
		switch {
		case r.zero:
			st.Zero++
		case r.stored:
			stored[c.Chunks[i]] = r.n
		}
	}
	for _, n := range stored {
		st.New++
		st.NewBytes += n
	}
	return c, st, nil
}

type chunkResult struct {
	zero, stored bool
	n            int64
}
