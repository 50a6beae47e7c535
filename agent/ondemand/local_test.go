package ondemand_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// A local partition with chunk 3 drifted (one byte flipped): every other
// chunk is read from it and checked; chunk 3 is said and, with a source,
// fetched from it (the only request), or, without, its reads fail with
// image.ErrChecksum while the rest of the partition reads fine.
func TestALocalPartitionIsCheckedChunkByChunkAsItIsRead(t *testing.T) {
	p := makePartition(t)
	disk := bytes.Clone(p.raw)
	disk[3*cs+77] ^= 0xff
	for _, tc := range []struct {
		name   string
		source bool
	}{{"drift fetched from a source", true}, {"drift with no source", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dec, err := image.NewDecoder()
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Close()
			l := &logs{}
			src := newCounting(p.dir, "store")
			o := ondemand.Options{Content: p.content, ChunkSize: cs, Decoder: dec, CacheBytes: 1 << 30, Logf: l.logf, Local: bytes.NewReader(disk)}
			if tc.source {
				o.Fetcher = fetch.New([]store.Source{src}, fast())
			}
			r, err := ondemand.New(o)
			if err != nil {
				t.Fatal(err)
			}
			all := make([]byte, len(p.raw))
			err = r.ReadAt(t.Context(), all, 0)
			switch {
			case tc.source && (err != nil || !bytes.Equal(all, p.raw)):
				t.Fatalf("with a source: %v, or the drifted bytes given", err)
			case !tc.source && !errors.Is(err, image.ErrChecksum):
				t.Fatalf("a read over the drifted chunk with no source: %v, want image.ErrChecksum", err)
			}
			if !tc.source {
				for _, i := range []int64{0, 1, 2, 4} {
					b := make([]byte, min(cs, int64(len(p.raw))-i*cs))
					if err := r.ReadAt(t.Context(), b, i*cs); err != nil || !bytes.Equal(b, p.raw[i*cs:i*cs+int64(len(b))]) {
						t.Errorf("chunk %d, intact on the disk: %v", i, err)
					}
				}
			}
			st := r.Stats()
			if st.Drifted != 1 || st.LocalBytes != int64(len(p.raw)-2*cs) {
				t.Errorf("drifted %d, local bytes %d; want 1 and the 3 intact data chunks' %d", st.Drifted, st.LocalBytes, len(p.raw)-2*cs)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.source]; src.total() != want || src.count(p.content.Chunks[3]) != want {
				t.Errorf("the source was asked %d times (%d for chunk 3), want %d, for the drifted chunk only", src.total(), src.count(p.content.Chunks[3]), want)
			}
			if said, _ := l.matching("chunk 3: "); len(said) == 0 || !strings.Contains(said[0], "on the local partition it hashes to") {
				t.Errorf("the drift was not said:\n%s", strings.Join(l.lines, "\n"))
			}
		})
	}
}
