package ondisk

import (
	"crypto/rand"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/imprint-dev/imprint/image"
)

// BenchmarkServeChunkWork is the per-chunk work of serving from a disk:
// hash check and image.Compress, on random (incompressible) and text data.
func BenchmarkServeChunkWork(b *testing.B) {
	rnd := make([]byte, 4<<20)
	rand.Read(rnd)
	txt := make([]byte, 4<<20)
	for i := range txt {
		txt[i] = "imprint benchmark line of fairly compressible text\n"[i%51]
	}
	for _, lvl := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault} {
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(1))
		for name, data := range map[string][]byte{"random": rnd, "text": txt} {
			b.Run(lvl.String()+"/"+name, func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					_ = image.HashBytes(data)
					_ = image.Compress(enc, data)
				}
			})
		}
	}
	b.Run("hash-only", func(b *testing.B) {
		b.SetBytes(int64(len(rnd)))
		for b.Loop() {
			_ = image.HashBytes(rnd)
		}
	})
}
