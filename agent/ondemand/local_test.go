package ondemand_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
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

// countingAt counts the reads of each chunk of a local partition and
// fails those of the chunks in fail.
type countingAt struct {
	mu    sync.Mutex
	disk  []byte
	reads map[int64]int
	fail  map[int64]bool
}

func (c *countingAt) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads[off/cs]++
	if c.fail[off/cs] {
		return 0, fmt.Errorf("sector %d: %w", off/512, syscall.EIO)
	}
	return copy(p, c.disk[off:]), nil
}

// A drifted chunk, with no source and a cache of one chunk (so that each
// read of another chunk drops it), is read from the disk, said and
// counted once however often it is read; every read of it fails with
// image.ErrChecksum. A chunk the disk fails to read is no drift: it is
// counted apart and read again next time.
func TestADriftedChunkIsReadSaidAndCountedOnce(t *testing.T) {
	p := makePartition(t)
	disk := bytes.Clone(p.raw)
	disk[3*cs+77] ^= 0xff
	dec, err := image.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	l := &logs{}
	at := &countingAt{disk: disk, reads: map[int64]int{}, fail: map[int64]bool{1: true}}
	r, err := ondemand.New(ondemand.Options{Content: p.content, ChunkSize: cs, Decoder: dec, CacheBytes: cs, Logf: l.logf, Local: at})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		b := make([]byte, 10)
		if err := r.ReadAt(t.Context(), b, 3*cs); !errors.Is(err, image.ErrChecksum) {
			t.Fatalf("a read of the drifted chunk: %v, want image.ErrChecksum", err)
		}
		if err := r.ReadAt(t.Context(), b, 1*cs); err == nil || errors.Is(err, image.ErrChecksum) || !errors.Is(err, syscall.EIO) {
			t.Fatalf("a read of the chunk the disk fails: %v, want EIO and no checksum error", err)
		}
		if err := r.ReadAt(t.Context(), b, 2*cs); err != nil || !bytes.Equal(b, p.raw[2*cs:2*cs+10]) {
			t.Fatalf("a read of an intact chunk: %v", err)
		}
	}
	st := r.Stats()
	if st.Drifted != 1 || st.LocalErrors != 4 {
		t.Errorf("drifted %d, local errors %d; want 1 and 4", st.Drifted, st.LocalErrors)
	}
	at.mu.Lock()
	if at.reads[3] != 1 || at.reads[1] != 4 {
		t.Errorf("the disk was read %d times for the drifted chunk (want 1), %d for the failing one (want 4)", at.reads[3], at.reads[1])
	}
	at.mu.Unlock()
	if said, _ := l.matching("chunk 3: "); len(said) != 1 {
		t.Errorf("the drift was said %d times, want once:\n%s", len(said), strings.Join(l.lines, "\n"))
	}
}
