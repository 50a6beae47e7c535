package image

import (
	"encoding/binary"

	"github.com/klauspost/compress/zstd"
)

// Compress makes the stored (wire) form of a chunk for a server that has
// only the raw bytes, as imprint serve --disk does. zstd spends about ten
// times longer failing to shrink random data than shrinking text, so a
// chunk whose samples do not compress is sent as a zstd frame of raw
// blocks: any zstd decoder reads it, and it costs a copy.
func Compress(enc *zstd.Encoder, data []byte) []byte {
	if incompressible(enc, data) {
		return RawFrame(data)
	}
	return enc.EncodeAll(data, make([]byte, 0, len(data)/2+64))
}

// incompressible samples the start and the middle of data.
func incompressible(enc *zstd.Encoder, data []byte) bool {
	const sample = 64 << 10
	if len(data) < 4*sample {
		return false
	}
	var buf []byte
	for _, off := range []int{0, len(data)/2 - sample/2} {
		buf = enc.EncodeAll(data[off:off+sample], buf[:0])
		if len(buf) < sample*97/100 {
			return false
		}
	}
	return true
}

// RawFrame wraps data in a zstd frame of raw (uncompressed) blocks, per
// RFC 8878: a single-segment frame with an 8-byte content size, then blocks
// of at most 128 KiB, the last one flagged.
func RawFrame(data []byte) []byte {
	const maxBlock = 128 << 10
	out := make([]byte, 0, len(data)+13+3*(len(data)/maxBlock+1))
	out = binary.LittleEndian.AppendUint32(out, 0xFD2FB528)
	out = append(out, 0xE0) // content size in 8 bytes, single segment, no checksum, no dictionary
	out = binary.LittleEndian.AppendUint64(out, uint64(len(data)))
	for {
		n := min(len(data), maxBlock)
		var last uint32
		if n == len(data) {
			last = 1
		}
		h := uint32(n)<<3 | last // block type 0: raw
		out = append(out, byte(h), byte(h>>8), byte(h>>16))
		out = append(out, data[:n]...)
		data = data[n:]
		if last == 1 {
			return out
		}
	}
}
