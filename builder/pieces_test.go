package builder

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// buildPieces builds a 1 MiB-chunk image of a partition with a repeated
// chunk, a zero chunk and a short last chunk, with the given piece size.
func buildPieces(t *testing.T, pieceSize int64) (*Result, []byte, error) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.CreateDir(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20+512)
	for i := range 1 << 20 {
		data[i] = byte(i * 13)
		data[2<<20+i] = byte(i * 13)
	}
	copy(data[3<<20:], "short")
	part := filepath.Join(dir, "data.img")
	if err := os.WriteFile(part, data, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Build(t.Context(), Options{Store: st, Name: "demo", Version: "1", ChunkSize: 1 << 20, PieceSize: pieceSize,
		Partitions: []PartitionFile{{Name: "data", Path: part}}, TmpDir: dir})
	return res, data, err
}

func TestBuildGivesSwarmPiecesOfTheContent(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000") // the files' times differ
	for _, tc := range []struct {
		name  string
		given int64
		want  int64 // 0: no extension
	}{
		{"default", 0, image.DefaultPieceLength},
		{"given", 256 << 10, 256 << 10},
		{"smallest", image.MinPieceLength, image.MinPieceLength},
		{"none", -1, 0},
		{"the chunk size", 1 << 20, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, data, err := buildPieces(t, tc.given)
			if err != nil {
				t.Fatal(err)
			}
			sp, ok, err := res.Manifest.SwarmPieces()
			if err != nil {
				t.Fatal(err)
			}
			if ok != (tc.want != 0) {
				t.Fatalf("extension present %v, want %v", ok, tc.want != 0)
			}
			if !ok {
				return
			}
			if sp.PieceLength != tc.want {
				t.Fatalf("piece length %d, want %d", sp.PieceLength, tc.want)
			}
			m := res.Manifest
			want, err := image.PieceHashes(m, tc.want, func(p, c int, buf []byte) error {
				copy(buf, data[int64(c)*m.ChunkSize:])
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sp.Hashes, want) {
				t.Error("the manifest's piece hashes are not those of the content")
			}
			// Two distinct non-zero chunks (the repeat is one).
			if n := len(sp.Hashes) / image.PieceHashLen; n != 2*int(m.ChunkSize/tc.want) {
				t.Errorf("%d pieces, want %d", n, 2*m.ChunkSize/tc.want)
			}
			again, _, err := buildPieces(t, tc.given)
			if err != nil {
				t.Fatal(err)
			}
			if again.ID != res.ID {
				t.Errorf("the same input built %s, then %s", res.ID, again.ID)
			}
		})
	}
}

func TestBuildRefusesABadPieceSize(t *testing.T) {
	for _, n := range []int64{8 << 10, 96 << 10, 2 << 20} {
		_, _, err := buildPieces(t, n)
		if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "--piece-size") {
			t.Errorf("piece size %d: %v, want ErrInput naming --piece-size", n, err)
		}
	}
}

// A build raises the piece length until the torrent has at most
// image.MaxSwarmPieces pieces, saying so when --piece-size gave it; at
// the chunk size there is no extension (0).
func TestBuildRaisesThePieceSizeOfALargeImage(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name     string
		n        int64
		given    bool
		distinct int
		want     int64
		note     string // in the note; "" is none
	}{
		{"default, small", image.DefaultPieceLength, false, 1000, image.DefaultPieceLength, ""},
		{"default, 20000 chunks", image.DefaultPieceLength, false, 20000, 512 << 10, ""},
		{"default, 140000 chunks", image.DefaultPieceLength, false, 140000, 0, ""},
		{"given, small", 16 << 10, true, 1000, 16 << 10, ""},
		{"given, 20000 chunks", 16 << 10, true, 20000, 512 << 10, "--piece-size 16.0 KiB: 20000 distinct chunks would make 1280000 swarm pieces, more than 65536; raised to 512.0 KiB"},
		{"given, 140000 chunks", 64 << 10, true, 140000, 0, "raised to the chunk size (1.0 MiB: pieces are chunks)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, note := capPieceLength(tc.n, tc.given, tc.distinct, mib)
			if got != tc.want {
				t.Errorf("piece length %d, want %d", got, tc.want)
			}
			if (note == "") != (tc.note == "") || !strings.Contains(note, tc.note) {
				t.Errorf("note %q, want one with %q", note, tc.note)
			}
		})
	}
}
