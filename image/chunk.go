package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"unsafe"

	"github.com/klauspost/compress/zstd"
)

// Decoder turns stored chunks back into verified bytes. It is safe for
// concurrent use.
type Decoder struct {
	dec *zstd.Decoder
}

// NewDecoder makes a Decoder.
func NewDecoder() (*Decoder, error) {
	// DecodeAll is safe for concurrent use; concurrency 0 gives one
	// decoder per CPU, as many as the copier's workers can keep busy.
	// zstd's own frame checksum (xxhash64) is not checked: Decode checks
	// the SHA-256 of every chunk, which proves more, and the xxhash pass
	// cost a few per cent of a deploy's CPU.
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(128<<20), zstd.IgnoreChecksum(true))
	if err != nil {
		return nil, err
	}
	return &Decoder{dec: d}, nil
}

// Close frees the decoder.
func (d *Decoder) Close() { d.dec.Close() }

// Decode decompresses a stored chunk into buf (reused when large enough) and
// checks its length and SHA-256. A chunk that fails either check is an
// ErrChecksum error naming the chunk.
func (d *Decoder) Decode(stored []byte, sum string, wantLen int64, buf []byte) ([]byte, error) {
	out, err := d.dec.DecodeAll(stored, buf[:0])
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w: cannot decompress (%v)", sum, ErrChecksum, err)
	}
	if int64(len(out)) != wantLen {
		return nil, fmt.Errorf("chunk %s: %w: %d bytes, want %d", sum, ErrChecksum, len(out), wantLen)
	}
	if got := HashBytes(out); got != sum {
		return nil, fmt.Errorf("chunk %s: %w: content hashes to %s", sum, ErrChecksum, got)
	}
	return out, nil
}

// HashBytes is the hex SHA-256 of b.
func HashBytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

var zeroPage [64 << 10]byte

// IsZero reports whether b holds only zero bytes.
func IsZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// WriteZeros feeds n zero bytes to w (a hash, most often), a page at a
// time, so a partition's zero chunks never need a buffer of their size.
func WriteZeros(w io.Writer, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeroPage)))
		w.Write(zeroPage[:k])
		n -= k
	}
}

// BufAlign is the alignment of BufPool buffers: enough for O_DIRECT I/O on
// devices with 4 KiB logical sectors.
const BufAlign = 4096

// BufPool hands out chunk-sized buffers so a pipeline allocates a few and
// reuses them. Buffers start on a BufAlign boundary so they can be used for
// O_DIRECT reads and writes as they are.
type BufPool struct {
	size int
	p    sync.Pool
}

// NewBufPool makes a pool of size-byte buffers.
func NewBufPool(size int) *BufPool {
	bp := &BufPool{size: size}
	bp.p.New = func() any { b := AlignedBuf(size); return &b }
	return bp
}

// AlignedBuf allocates size bytes starting on a BufAlign boundary.
func AlignedBuf(size int) []byte {
	raw := make([]byte, size+BufAlign)
	o := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(raw))) & (BufAlign - 1)); r != 0 {
		o = BufAlign - r
	}
	return raw[o : o+size : o+size]
}

// Get returns a buffer of the pool's size.
func (bp *BufPool) Get() *[]byte {
	b := bp.p.Get().(*[]byte)
	*b = (*b)[:bp.size]
	return b
}

// Put returns a buffer.
func (bp *BufPool) Put(b *[]byte) { bp.p.Put(b) }
