package netboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/chunkcache"
)

// DefaultBootCache bounds the decoded chunks of boot files and loaders kept
// between requests. A rack's kernel and initrd fit many times over; a
// larger set is decoded again as it is read, not held twice.
const DefaultBootCache = 256 << 20

// ErrTooLarge says a boot file's manifest claims more bytes than any boot
// file may have: it is refused, not streamed.
var ErrTooLarge = errors.New("boot file is larger than the limit")

// chunkLoadTimeout bounds one chunk's fetch and decode.
const chunkLoadTimeout = 2 * time.Minute

// newChunkCache makes the cache of decoded, checked chunks by name. Each
// chunk is loaded once however many readers ask for it at the same time
// (they wait for the first), and a chunk in use by a reader is pinned, so
// no chunk is ever held twice. Chunks nobody reads are kept, least
// recently used first out, while their bytes stay under max.
func newChunkCache(max int64) *chunkcache.Cache[string] {
	if max <= 0 {
		max = DefaultBootCache
	}
	return chunkcache.New[string](chunkcache.Options{MaxBytes: max})
}

// contentReader reads one content straight from its chunks, each checked
// against its name as it is decoded (the chunk list is the manifest's, so
// the bytes are the manifest's). It is the io.ReadSeeker
// http.ServeContent needs for Range and HEAD, and never holds more than
// the one chunk it is in.
type contentReader struct {
	ctx       context.Context
	cache     *chunkcache.Cache[string]
	load      func(ctx context.Context, sum string, n int64) ([]byte, error)
	content   *image.Content
	chunkSize int64

	off     int64
	cur     []byte // chunk idx, pinned in cache until release
	release func()
	idx     int
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
		data, release, err := r.cache.Acquire(r.ctx, sum, func(ctx context.Context) ([]byte, error) {
			// The load runs for every reader waiting on the chunk, so it
			// is not tied to the client that happened to ask first.
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), chunkLoadTimeout)
			defer cancel()
			return r.load(lctx, sum, n)
		})
		if err != nil {
			return 0, err
		}
		r.cur, r.release, r.idx = data, release, i
	}
	w := copy(p, r.cur[in:])
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
	if r.release != nil {
		r.release()
		r.cur, r.release = nil, nil
	}
}

// Close lets go of the chunk the reader is in.
func (r *contentReader) Close() error {
	r.drop()
	return nil
}
