package image

import (
	"bytes"
	"crypto/rand"
	"os/exec"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestRawFrameIsZstd: raw frames decode with imprint's decoder and with
// the zstd tool, for sizes around the block limit.
func TestRawFrameIsZstd(t *testing.T) {
	dec, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for _, n := range []int{0, 1, 128<<10 - 1, 128 << 10, 128<<10 + 1, 4 << 20} {
		data := randBytes(n)
		f := RawFrame(data)
		got, err := dec.Decode(f, HashBytes(data), int64(n), make([]byte, n))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if _, err := exec.LookPath("zstd"); err == nil {
			cmd := exec.Command("zstd", "-dc")
			cmd.Stdin = bytes.NewReader(f)
			out, err := cmd.Output()
			if err != nil || !bytes.Equal(out, data) {
				t.Fatalf("zstd -d of a %d-byte raw frame: %v", n, err)
			}
		}
	}
}

func TestCompressPicksRawOnlyForRandomData(t *testing.T) {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	random := randBytes(1 << 20)
	text := bytes.Repeat([]byte("imprint compressible line\n"), 40000)
	if c := Compress(enc, random); len(c) <= len(random) || !bytes.Equal(c, RawFrame(random)) {
		t.Errorf("random data: %d bytes, not a raw frame", len(c))
	}
	if c := Compress(enc, text); len(c) > len(text)/10 {
		t.Errorf("text compressed to %d of %d bytes", len(c), len(text))
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
