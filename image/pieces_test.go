package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/layout"
)

// pieceManifest is an image of two partitions with 256 KiB chunks: a
// repeated chunk, a zero chunk and a short last chunk; data gives each
// partition's bytes.
func pieceManifest(t *testing.T) (*Manifest, [][]byte) {
	t.Helper()
	const cs = 256 << 10
	mk := func(seed byte, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return b
	}
	a := mk(1, cs)
	b := mk(2, cs)
	p0 := append(append(append([]byte{}, a...), make([]byte, cs)...), a...)
	p0 = append(p0, mk(3, 100<<10)...)
	p1 := append(append([]byte{}, b...), a...)
	m := &Manifest{Format: FormatVersion, Name: "n", Version: "v", Created: time.Unix(0, 0).UTC(), ChunkSize: cs}
	for i, d := range [][]byte{p0, p1} {
		c := &Content{Size: int64(len(d)), SHA256: HashBytes(d)}
		for off := 0; off < len(d); off += cs {
			ch := d[off:min(off+cs, len(d))]
			if IsZero(ch) {
				c.Chunks = append(c.Chunks, ZeroChunk)
			} else {
				c.Chunks = append(c.Chunks, HashBytes(ch))
			}
		}
		m.Partitions = append(m.Partitions, Partition{Name: fmt.Sprintf("p%d", i), Type: layout.TypeLinuxGeneric, Content: c})
	}
	return m, [][]byte{p0, p1}
}

func readFrom(m *Manifest, data [][]byte) func(p, c int, buf []byte) error {
	return func(p, c int, buf []byte) error {
		copy(buf, data[p][int64(c)*m.ChunkSize:])
		return nil
	}
}

func TestTorrentChunksAreDistinctNonZeroInFirstOrder(t *testing.T) {
	m, _ := pieceManifest(t)
	cs, err := m.TorrentChunks()
	if err != nil {
		t.Fatal(err)
	}
	// p0: a, zero, a, short; p1: b, a.
	want := []struct{ p, c int }{{0, 0}, {0, 3}, {1, 0}}
	if len(cs) != len(want) {
		t.Fatalf("%d chunks, want %d", len(cs), len(want))
	}
	for i, w := range want {
		if cs[i].Partition != w.p || cs[i].Chunk != w.c || cs[i].Sum != m.Partitions[w.p].Content.Chunks[w.c] {
			t.Errorf("chunk %d: %+v, want partition %d chunk %d", i, cs[i], w.p, w.c)
		}
	}
	if cs[1].Length != 100<<10 {
		t.Errorf("short chunk length %d", cs[1].Length)
	}
}

func TestPieceHashesRoundTripThroughTheManifest(t *testing.T) {
	m, data := pieceManifest(t)
	h, err := PieceHashes(m, 64<<10, readFrom(m, data))
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3*4*PieceHashLen {
		t.Fatalf("%d bytes of hashes, want %d", len(h), 3*4*PieceHashLen)
	}
	// The short chunk's last piece is all padding: the hash of zeros.
	zero := sha256.Sum256(make([]byte, 64<<10))
	if !bytes.Equal(h[(4+3)*PieceHashLen:(4+4)*PieceHashLen], zero[:PieceHashLen]) {
		t.Error("a piece wholly in a chunk's padding is not the hash of zeros")
	}
	if err := m.SetSwarmPieces(&SwarmPieces{PieceLength: 64 << 10, Hashes: h}); err != nil {
		t.Fatal(err)
	}
	m.Extensions["vendor.example"] = json.RawMessage(`1`)
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	sp, ok, err := back.SwarmPieces()
	if err != nil || !ok {
		t.Fatalf("SwarmPieces: %v %v", ok, err)
	}
	if sp.PieceLength != 64<<10 || !bytes.Equal(sp.Hashes, h) {
		t.Error("the extension did not round-trip")
	}
	if _, ok := back.Extensions["vendor.example"]; !ok {
		t.Error("setting the extension dropped another")
	}
}

func TestPieceHashesRefuseBytesThatDoNotMatchTheManifest(t *testing.T) {
	m, data := pieceManifest(t)
	data[1] = bytes.Clone(data[1])
	data[1][5] ^= 1
	if _, err := PieceHashes(m, 64<<10, readFrom(m, data)); err == nil || !strings.Contains(err.Error(), "partition p1 chunk 0") {
		t.Fatalf("got %v, want an error naming partition p1 chunk 0", err)
	}
}

func TestAbsentSwarmPiecesIsNoError(t *testing.T) {
	m, _ := pieceManifest(t)
	if sp, ok, err := m.SwarmPieces(); sp != nil || ok || err != nil {
		t.Fatalf("got %v %v %v", sp, ok, err)
	}
}

func TestMalformedSwarmPiecesAreRefusedByName(t *testing.T) {
	m, data := pieceManifest(t)
	h, err := PieceHashes(m, 64<<10, readFrom(m, data))
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		name, value, want string
		chunkSize         int64 // 0: the manifest's (256 KiB)
	}{
		{"not an object", `[1]`, "extension " + SwarmPiecesExtension, 0},
		{"unknown key", `{"piece_length": 65536, "hashes": "` + enc(h) + `", "x": 1}`, "x", 0},
		{"not a power of two", `{"piece_length": 98304, "hashes": "` + enc(h) + `"}`, "not a power of two", 0},
		{"below 16 KiB", `{"piece_length": 8192, "hashes": "` + enc(h) + `"}`, "below 16384", 0},
		{"the chunk size", `{"piece_length": 262144, "hashes": "` + enc(h) + `"}`, "not below the chunk size", 0},
		{"not base64", `{"piece_length": 65536, "hashes": "!!!"}`, "not base64", 0},
		{"too short", `{"piece_length": 65536, "hashes": "` + enc(h[:len(h)-20]) + `"}`, "want 240", 0},
		{"for another piece length", `{"piece_length": 32768, "hashes": "` + enc(h) + `"}`, "want 480", 0},
		// A manifest read without Validate (the agent's) can have any
		// chunk size: 4 pieces of 64 KiB and a rest.
		{"not dividing the chunk size", `{"piece_length": 65536, "hashes": "` + enc(h) + `"}`, "does not divide the chunk size 300000", 300000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.ChunkSize = 256 << 10
			if tc.chunkSize != 0 {
				m.ChunkSize = tc.chunkSize
			}
			m.Extensions = map[string]json.RawMessage{SwarmPiecesExtension: json.RawMessage(tc.value)}
			_, ok, err := m.SwarmPieces()
			if !ok || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), SwarmPiecesExtension) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, %v; want an ErrFormat naming %s and %q", ok, err, SwarmPiecesExtension, tc.want)
			}
		})
	}
}

// bigManifest is a manifest of one partition of n distinct chunks of
// chunkSize bytes (their sums made up: no data behind them).
func bigManifest(n int, chunkSize int64) *Manifest {
	c := &Content{Size: int64(n) * chunkSize, SHA256: HashBytes([]byte("whole"))}
	for i := range n {
		c.Chunks = append(c.Chunks, HashBytes([]byte(fmt.Sprint(i))))
	}
	return &Manifest{Format: FormatVersion, Name: "big", Version: "1", Created: time.Unix(0, 0).UTC(), ChunkSize: chunkSize,
		Partitions: []Partition{{Name: "root", Type: layout.TypeLinuxGeneric, Content: c}}}
}

// The piece length is raised until the torrent has at most
// MaxSwarmPieces pieces; at the chunk size there is no extension (0).
func TestChoosePieceLengthKeepsTheTorrentUnderTheCap(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name      string
		chunks    int
		chunkSize int64
		want, got int64
	}{
		{"a small image", 100, mib, 64 << 10, 64 << 10},
		{"no chunks", 0, mib, 64 << 10, 64 << 10},
		{"exactly the cap", 4096, mib, 64 << 10, 64 << 10},
		{"one chunk over", 4097, mib, 64 << 10, 128 << 10},
		{"30000 chunks", 30000, mib, 64 << 10, 512 << 10},
		{"40000 chunks: pieces are chunks", 40000, mib, 64 << 10, 0},
		{"140000 chunks: pieces are chunks", 140000, mib, 64 << 10, 0},
		{"4 MiB chunks", 10000, 4 * mib, 64 << 10, mib},
		{"16 KiB wanted, small", 100, mib, 16 << 10, 16 << 10},
		{"16 KiB wanted, 2000 chunks", 2000, mib, 16 << 10, 32 << 10},
		{"the chunk size wanted", 10, mib, mib, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ChoosePieceLength(tc.chunks, tc.chunkSize, tc.want)
			if got != tc.got {
				t.Fatalf("got %d, want %d", got, tc.got)
			}
			if got != 0 && int64(tc.chunks)*(tc.chunkSize/got) > MaxSwarmPieces {
				t.Errorf("%d pieces, more than %d", int64(tc.chunks)*(tc.chunkSize/got), MaxSwarmPieces)
			}
		})
	}
}

// A manifest with the extension a build gives stays far below what a
// client fetches (store/http.go: 64 MiB), also for ~140 GiB of distinct
// 1 MiB chunks, and its extension reads back.
func TestManifestWithSwarmPiecesStaysSmall(t *testing.T) {
	for _, n := range []int{4096, 32768, 140000} {
		m := bigManifest(n, 1<<20)
		if pl := ChoosePieceLength(n, m.ChunkSize, DefaultPieceLength); pl != 0 {
			pieces := int64(n) * (m.ChunkSize / pl)
			if err := m.SetSwarmPieces(&SwarmPieces{PieceLength: pl, Hashes: make([]byte, pieces*PieceHashLen)}); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) > 16<<20 {
			t.Errorf("%d chunks: a manifest of %d MiB", n, len(raw)>>20)
		}
		if _, _, err := m.SwarmPieces(); err != nil {
			t.Errorf("%d chunks: %v", n, err)
		}
		t.Logf("%d chunks: manifest %d KiB", n, len(raw)>>10)
	}
}

// An extension of more than MaxSwarmPieces pieces is refused, naming the
// extension and the count.
func TestSwarmPiecesOverTheCapAreRefused(t *testing.T) {
	m := bigManifest(4097, 1<<20)
	if err := m.SetSwarmPieces(&SwarmPieces{PieceLength: 64 << 10, Hashes: make([]byte, 4097*16*PieceHashLen)}); err != nil {
		t.Fatal(err)
	}
	_, ok, err := m.SwarmPieces()
	if !ok || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), SwarmPiecesExtension) || !strings.Contains(err.Error(), "4097 chunks of 16 pieces") {
		t.Fatalf("got %v, %v; want an ErrFormat naming %s and 4097 chunks of 16 pieces", ok, err, SwarmPiecesExtension)
	}
}

// A signed but absurd chunk size must not wrap the piece count around to
// one that passes (with no hashes at all).
func TestSwarmPiecesCountDoesNotOverflow(t *testing.T) {
	m := bigManifest(1<<16, 1<<62)
	if err := m.SetSwarmPieces(&SwarmPieces{PieceLength: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := m.SwarmPieces(); !ok || !errors.Is(err, ErrFormat) {
		t.Fatalf("got %v, %v; want an ErrFormat", ok, err)
	}
}

// manyChunks is an image of one partition of n distinct 64 KiB chunks.
func manyChunks(t *testing.T, n int) (*Manifest, [][]byte) {
	t.Helper()
	const cs = 64 << 10
	d := make([]byte, n*cs)
	for i := range d {
		d[i] = byte(i/cs) ^ byte(i*13)
	}
	c := &Content{Size: int64(len(d)), SHA256: HashBytes(d)}
	for off := 0; off < len(d); off += cs {
		c.Chunks = append(c.Chunks, HashBytes(d[off:off+cs]))
	}
	m := &Manifest{Format: FormatVersion, Name: "n", Version: "v", Created: time.Unix(0, 0).UTC(), ChunkSize: cs,
		Partitions: []Partition{{Name: "p0", Type: layout.TypeLinuxGeneric, Content: c}}}
	return m, [][]byte{d}
}

// The chunks are hashed on several goroutines: each chunk's hashes still
// land in its own place, in the torrent's order.
func TestPieceHashesOfManyChunksAreInChunkOrder(t *testing.T) {
	m, data := manyChunks(t, 97)
	h, err := PieceHashes(m, 16<<10, readFrom(m, data))
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for off := 0; off < len(data[0]); off += 16 << 10 {
		s := sha256.Sum256(data[0][off : off+16<<10])
		want = append(want, s[:PieceHashLen]...)
	}
	if !bytes.Equal(h, want) {
		t.Fatal("the piece hashes are not those of the chunks' pieces in order")
	}
}

// Of several chunks that fail, the error names the first in order,
// whichever goroutine met it first.
func TestPieceHashesNameTheFirstBadChunk(t *testing.T) {
	m, data := manyChunks(t, 64)
	data[0] = bytes.Clone(data[0])
	data[0][50*64<<10] ^= 1
	data[0][7*64<<10+9] ^= 1
	for range 20 {
		_, err := PieceHashes(m, 16<<10, readFrom(m, data))
		if err == nil || !strings.Contains(err.Error(), "partition p0 chunk 7:") {
			t.Fatalf("got %v, want an error naming partition p0 chunk 7", err)
		}
	}
	boom := errors.New("boom")
	_, err := PieceHashes(m, 16<<10, func(p, c int, buf []byte) error {
		switch c {
		case 3:
			// Fails last: another goroutine meets chunk 60 first.
			time.Sleep(100 * time.Millisecond)
			return boom
		case 60:
			return boom
		}
		return readFrom(m, data)(p, c, buf)
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "chunk 3:") {
		t.Fatalf("got %v, want boom at chunk 3", err)
	}
}
