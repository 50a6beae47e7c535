package agent

import (
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/image"
)

func TestParseCmdlineSlice(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64 // -1: not said (ondemand.DefaultWindow applies)
		wantErr string
	}{
		{"imprint.source=http://a/", -1, ""},
		{"imprint.source=http://a/ imprint.slice=0", 0, ""},
		{"imprint.source=http://a/ imprint.slice=64K", 64 << 10, ""},
		{"imprint.source=http://a/ imprint.slice=1M", 1 << 20, ""},
		{"imprint.source=http://a/ imprint.slice=65536", 64 << 10, ""},
		{"imprint.source=http://a/ imprint.slice=0K", 0, ""},
		{"imprint.source=http://a/ imprint.slice=100000", 100000, ""},
		{"imprint.source=http://a/ imprint.slice=128M", 0, "imprint.slice=128M: want a size from 0 (whole chunks) to 67108864"},
		{"imprint.source=http://a/ imprint.slice=64KB", 0, `ambiguous unit "KB"`},
		{"imprint.source=http://a/ imprint.slice=-1", 0, "imprint.slice=-1"},
		{"imprint.source=http://a/ imprint.slice=lots", 0, "imprint.slice=lots"},
		{"imprint.source=http://a/ imprint.slice", 0, "imprint.slice="},
	} {
		p, err := ParseCmdline(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		got := int64(-1)
		if p.Slice != nil {
			got = *p.Slice
		}
		if got != tc.want {
			t.Errorf("%q: slice %d, want %d", tc.in, got, tc.want)
		}
	}
}

// piecesManifest is a two-chunk image of 64 KiB chunks with 16 KiB swarm
// pieces (malformed: hashes of the wrong length).
func piecesManifest(t *testing.T, malformed bool) (*image.Manifest, *image.Partition) {
	t.Helper()
	raw := make([]byte, 128<<10)
	raw[0], raw[70000] = 1, 2
	c := &image.Content{Size: int64(len(raw)), SHA256: image.HashBytes(raw), Chunks: []string{image.HashBytes(raw[:64<<10]), image.HashBytes(raw[64<<10:])}}
	m := &image.Manifest{Name: "sl", Version: "1", ChunkSize: 64 << 10, Partitions: []image.Partition{{Name: "root", Content: c}}}
	h, err := image.PieceHashes(m, 16<<10, func(_, k int, buf []byte) error {
		copy(buf, raw[k*(64<<10):])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if malformed {
		h = h[1:]
	}
	if err := m.SetSwarmPieces(&image.SwarmPieces{PieceLength: 16 << 10, Hashes: h}); err != nil {
		t.Fatal(err)
	}
	return m, &m.Partitions[0]
}

func TestTheRootReadsPiecesOnlyWhereItCan(t *testing.T) {
	zero, one := int64(0), int64(1)
	for _, tc := range []struct {
		name      string
		slice     *int64
		cfg       serverConfig
		malformed bool
		want      int64 // window; 0: whole chunks
		say       string
	}{
		{"the default: 128K, at most a chunk", nil, serverConfig{}, false, 64 << 10, ""},
		{"imprint.slice=0", &zero, serverConfig{}, false, 0, ""},
		{"rounded up to a piece", &one, serverConfig{}, false, 16 << 10, ""},
		{"imprint.fill=1", nil, serverConfig{Fill: true}, false, 0, ""},
		{"imprint.swarm=1", nil, serverConfig{Swarm: &rootSwarm{}}, false, 0, ""},
		{"imprint.readahead=2", nil, serverConfig{Readahead: 2}, false, 0, ""},
		{"a malformed extension", nil, serverConfig{}, true, 0, "WARNING: the image's swarm pieces are unusable"},
		{"no http(s) source: no web seed", nil, serverConfig{Sources: []string{"/srv/store"}}, false, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			a := &Agent{Console: &out, Params: Params{Slice: tc.slice}}
			m, rp := piecesManifest(t, tc.malformed)
			if tc.cfg.Sources == nil {
				tc.cfg.Sources = []string{"/srv/store", "http://10.0.2.2:8080/"}
			}
			sl := a.ondemandSlices(m, rp, tc.cfg)
			var got int64
			if sl != nil {
				got = sl.Window
			}
			if got != tc.want || !strings.Contains(out.String(), tc.say) || (tc.say == "" && out.Len() > 0) {
				t.Fatalf("window %d, said %q; want %d, %q", got, out.String(), tc.want, tc.say)
			}
		})
	}
}

// TestTheFetchedLineCountsPieces: a root that fetched only pieces does not
// say it fetched its bytes in 0 chunks.
func TestTheFetchedLineCountsPieces(t *testing.T) {
	for _, tc := range []struct {
		st   ondemand.Stats
		want string
	}{
		{ondemand.Stats{FetchedBytes: 1 << 20, FetchedChunks: 1}, "fetched 1048576 bytes in 1 chunks, 25% of the root's"},
		{ondemand.Stats{FetchedBytes: 128 << 10, PieceBytes: 128 << 10, Pieces: 2}, "fetched 131072 bytes in 0 chunks and 2 signed pieces (131072 bytes), 3% of the root's"},
	} {
		if got := fetchedLine(tc.st, 4<<20); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%q; want %q", got, tc.want)
		}
	}
}
