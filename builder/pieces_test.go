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
