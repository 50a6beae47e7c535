package ondemand_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/agent/nbd"
	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
	"golang.org/x/sys/unix"
)

const cs = 64 << 10

// partition is a test partition in a real store directory: 5 chunks, the
// third all zeros, the last one short.
type partition struct {
	raw     []byte
	content *image.Content
	dir     *store.Dir
}

func makePartition(t *testing.T) partition {
	t.Helper()
	raw := make([]byte, 4*cs+cs/2)
	rand.Read(raw)
	clear(raw[2*cs : 3*cs])
	return storePartition(t, raw)
}

// storePartition puts raw's chunks in a new store (zero chunks named, not
// stored).
func storePartition(t *testing.T, raw []byte) partition {
	t.Helper()
	d, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &image.Content{Size: int64(len(raw)), SHA256: image.HashBytes(raw)}
	for off := 0; off < len(raw); off += cs {
		b := raw[off:min(off+cs, len(raw))]
		if image.IsZero(b) {
			c.Chunks = append(c.Chunks, image.ZeroChunk)
			continue
		}
		sum := image.HashBytes(b)
		if _, err := d.PutChunk(sum, b); err != nil {
			t.Fatal(err)
		}
		c.Chunks = append(c.Chunks, sum)
	}
	return partition{raw: raw, content: c, dir: d}
}

// counting is a source that counts what it is asked, and can be told to
// fail or to send wrong bytes.
type counting struct {
	store.Source
	name  string
	mu    sync.Mutex
	asked map[string]int
	// bad sums get another chunk's stored bytes: well-formed, wrong.
	bad   map[string]bool
	other string
	// down: every request fails as a lost server's would.
	down  atomic.Bool
	delay time.Duration
	// hold, when set, is called with every sum asked for, before the
	// answer: a test holds a request up in it.
	hold func(sum string)
}

func newCounting(src store.Source, name string) *counting {
	return &counting{Source: src, name: name, asked: map[string]int{}, bad: map[string]bool{}}
}

func (c *counting) String() string { return c.name }

func (c *counting) Chunk(ctx context.Context, sum string) ([]byte, error) {
	c.mu.Lock()
	c.asked[sum]++
	c.mu.Unlock()
	if c.delay > 0 {
		time.Sleep(c.delay)
	}
	if c.hold != nil {
		c.hold(sum)
	}
	if c.down.Load() {
		return nil, fmt.Errorf("%s: connection refused", c.name)
	}
	if c.bad[sum] {
		return c.Source.Chunk(ctx, c.other)
	}
	return c.Source.Chunk(ctx, sum)
}

func (c *counting) count(sum string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.asked[sum]
}

func (c *counting) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.asked {
		n += v
	}
	return n
}

func fast() fetch.Options {
	return fetch.Options{DownFor: 10 * time.Millisecond, Backoff: time.Millisecond, Poll: time.Millisecond, PollMax: time.Millisecond}
}

func newReader(t *testing.T, p partition, cache int64, opt fetch.Options, srcs ...store.Source) (*ondemand.Reader, *[]string) {
	t.Helper()
	dec, err := image.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	var mu sync.Mutex
	var logs []string
	r, err := ondemand.New(ondemand.Options{
		Content: p.content, ChunkSize: cs, Decoder: dec, CacheBytes: cache,
		Fetcher:  fetch.New(srcs, opt),
		RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond,
		Logf: func(f string, a ...any) {
			mu.Lock()
			logs = append(logs, fmt.Sprintf(f, a...))
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, &logs
}

func TestReadsSpanningChunksGiveThePartitionsBytes(t *testing.T) {
	p := makePartition(t)
	src := newCounting(p.dir, "store")
	r, _ := newReader(t, p, 1<<30, fast(), src)
	for _, tc := range []struct {
		name string
		off  int64
		n    int
	}{
		{"inside one chunk", 100, 1000},
		{"across a chunk boundary", cs - 10, 20},
		{"across the zero chunk", 2*cs - 512, cs + 1024},
		{"all of it", 0, len(p.raw)},
		{"the short last chunk", 4 * cs, cs / 2},
	} {
		got := make([]byte, tc.n)
		if err := r.ReadAt(t.Context(), got, tc.off); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(got, p.raw[tc.off:tc.off+int64(tc.n)]) {
			t.Errorf("%s: wrong bytes", tc.name)
		}
	}
	if err := r.ReadAt(t.Context(), make([]byte, 2), int64(len(p.raw))-1); err == nil {
		t.Error("a read past the end succeeded")
	}
	st := r.Stats()
	if src.count(image.ZeroChunk) != 0 || st.ZeroReads == 0 {
		t.Errorf("the zero chunk was asked for %d times (zero reads %d)", src.count(image.ZeroChunk), st.ZeroReads)
	}
	if st.FetchedChunks != 4 || st.FetchedBytes != int64(len(p.raw)-cs) || src.total() != 4 {
		t.Errorf("fetched %d chunks, %d bytes, %d requests; want each of the 4 data chunks once", st.FetchedChunks, st.FetchedBytes, src.total())
	}
}

func TestConcurrentReadsOfAChunkFetchItOnce(t *testing.T) {
	p := makePartition(t)
	src := newCounting(p.dir, "store")
	src.delay = 50 * time.Millisecond
	r, _ := newReader(t, p, 1<<30, fast(), src)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 100)
			off := int64(i * 1000)
			if err := r.ReadAt(t.Context(), b, off); err != nil || !bytes.Equal(b, p.raw[off:off+100]) {
				errs <- fmt.Errorf("reader %d: %v or wrong bytes", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := src.count(p.content.Chunks[0]); n != 1 {
		t.Errorf("chunk 0 was fetched %d times by 20 concurrent readers, want once", n)
	}
}

func TestABadChunkFromOneSourceIsRefusedAndFetchedFromAnother(t *testing.T) {
	p := makePartition(t)
	liar := newCounting(p.dir, "liar")
	liar.bad[p.content.Chunks[1]] = true
	liar.other = p.content.Chunks[0]
	good := newCounting(p.dir, "good")
	var refused atomic.Int32
	opt := fast()
	opt.OnError = func(i int, what string, err error) {
		if i == 0 && errors.Is(err, image.ErrChecksum) {
			refused.Add(1)
		}
	}
	r, _ := newReader(t, p, 1<<30, opt, liar, good)
	got := make([]byte, cs)
	if err := r.ReadAt(t.Context(), got, cs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, p.raw[cs:2*cs]) {
		t.Fatal("the reader gave the liar's bytes")
	}
	if liar.count(p.content.Chunks[1]) == 0 || good.count(p.content.Chunks[1]) != 1 || refused.Load() == 0 {
		t.Errorf("liar asked %d, good asked %d, refusals heard %d: want the liar asked and refused, then the good source",
			liar.count(p.content.Chunks[1]), good.count(p.content.Chunks[1]), refused.Load())
	}
}

func TestTheCacheStaysWithinItsBound(t *testing.T) {
	p := makePartition(t)
	src := newCounting(p.dir, "store")
	r, _ := newReader(t, p, 2*cs, fast(), src)
	all := make([]byte, len(p.raw))
	if err := r.ReadAt(t.Context(), all, 0); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.CachedBytes > 2*cs {
		t.Fatalf("the cache holds %d bytes, bound %d", st.CachedBytes, 2*cs)
	}
	// The last two chunks read (3 and 4) are kept; chunk 0 was dropped.
	b := make([]byte, 10)
	if err := r.ReadAt(t.Context(), b, 3*cs); err != nil {
		t.Fatal(err)
	}
	if n := src.count(p.content.Chunks[3]); n != 1 {
		t.Errorf("chunk 3, just read, was fetched %d times, want it from the cache", n)
	}
	if err := r.ReadAt(t.Context(), b, 0); err != nil || !bytes.Equal(b, p.raw[:10]) {
		t.Fatal(err)
	}
	st := r.Stats()
	if n := src.count(p.content.Chunks[0]); n != 2 || st.Refetched != 1 {
		t.Errorf("chunk 0, dropped from the cache, was fetched %d times (refetched %d), want twice", n, st.Refetched)
	}
	if st.CachedBytes > 2*cs {
		t.Errorf("the cache holds %d bytes, bound %d", st.CachedBytes, 2*cs)
	}
}

func TestALostSourceIsWaitedForAndSaidSo(t *testing.T) {
	p := makePartition(t)
	src := newCounting(p.dir, "server")
	src.down.Store(true)
	r, logs := newReader(t, p, 1<<30, fast(), src)
	go func() {
		time.Sleep(150 * time.Millisecond)
		src.down.Store(false)
	}()
	b := make([]byte, 10)
	if err := r.ReadAt(t.Context(), b, 0); err != nil || !bytes.Equal(b, p.raw[:10]) {
		t.Fatalf("after the server came back: %v", err)
	}
	joined := strings.Join(*logs, "\n")
	if !strings.Contains(joined, "connection refused") || !strings.Contains(joined, "wait") || !strings.Contains(joined, "fetched after waiting") {
		t.Errorf("the wait was not said on the log:\n%s", joined)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	src.down.Store(true)
	if err := r.ReadAt(ctx, b, cs); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a read with the server gone, after its context ended: %v", err)
	}
}

// The NBD server over a socketpair, answered by the reader: what the
// kernel's driver would see.
func TestNBDServesThePartitionOnDemand(t *testing.T) {
	p := makePartition(t)
	src := newCounting(p.dir, "store")
	r, _ := newReader(t, p, 1<<30, fast(), src)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[1], true); err != nil {
		t.Fatal(err)
	}
	k, s := os.NewFile(uintptr(fds[0]), "k"), os.NewFile(uintptr(fds[1]), "s")
	defer k.Close()
	go nbd.Serve(t.Context(), s, r, r.Size(), nbd.Options{})
	read := func(handle uint64, off int64, n uint32) []byte {
		var req [28]byte
		binary.BigEndian.PutUint32(req[0:], 0x25609513)
		binary.BigEndian.PutUint64(req[8:], handle)
		binary.BigEndian.PutUint64(req[16:], uint64(off))
		binary.BigEndian.PutUint32(req[24:], n)
		if _, err := k.Write(req[:]); err != nil {
			t.Fatal(err)
		}
		var h [16]byte
		if _, err := io.ReadFull(k, h[:]); err != nil {
			t.Fatal(err)
		}
		if e := binary.BigEndian.Uint32(h[4:]); e != 0 || binary.BigEndian.Uint64(h[8:]) != handle {
			t.Fatalf("read %d: errno %d", handle, e)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(k, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := read(1, cs-2048, 4096); !bytes.Equal(got, p.raw[cs-2048:cs+2048]) {
		t.Error("a read across two chunks gave wrong bytes")
	}
	if got := read(2, 2*cs, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Error("a read of the zero chunk gave non-zero bytes")
	}
	if st := r.Stats(); st.FetchedChunks != 2 || st.FetchedBytes >= r.Size() {
		t.Errorf("fetched %d chunks (%d bytes) for two small reads", st.FetchedChunks, st.FetchedBytes)
	}
}
