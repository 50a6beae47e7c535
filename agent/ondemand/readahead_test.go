package ondemand_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// makeLongPartition is n chunks of random bytes in a store, the ones in
// zero all zeros.
func makeLongPartition(t *testing.T, n int, zero ...int) partition {
	t.Helper()
	raw := make([]byte, n*cs)
	rand.Read(raw)
	for _, z := range zero {
		clear(raw[z*cs : (z+1)*cs])
	}
	return storePartition(t, raw)
}

func newAheadReader(t *testing.T, p partition, cache int64, k int, src store.Source) *ondemand.Reader {
	t.Helper()
	dec, err := image.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	r, err := ondemand.New(ondemand.Options{
		Content: p.content, ChunkSize: cs, Decoder: dec, CacheBytes: cache, Readahead: k,
		Fetcher:  fetch.New([]store.Source{src}, fast()),
		RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Runs before the decoder's Close (cleanups run last first).
	t.Cleanup(r.WaitReadahead)
	return r
}

// readChunks reads the partition a chunk at a time, in order, as a boot's
// page faults would, checks the bytes and says how long it took.
func readChunks(t *testing.T, r *ondemand.Reader, p partition, each func()) time.Duration {
	t.Helper()
	begin := time.Now()
	b := make([]byte, cs)
	for off := 0; off < len(p.raw); off += cs {
		if err := r.ReadAt(t.Context(), b, int64(off)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, p.raw[off:off+cs]) {
			t.Fatalf("chunk at %d: wrong bytes", off)
		}
		if each != nil {
			each()
		}
	}
	return time.Since(begin)
}

func TestReadAheadCutsSequentialReadsToAboutNOverKRoundTrips(t *testing.T) {
	const n, k, rtt = 32, 8, 50 * time.Millisecond
	p := makeLongPartition(t, n+1, 5)
	off := newCounting(p.dir, "slow")
	off.delay = rtt
	took0 := readChunks(t, newAheadReader(t, p, 64*cs, 0, off), p, nil)
	on := newCounting(p.dir, "slow")
	on.delay = rtt
	r := newAheadReader(t, p, 64*cs, k, on)
	took := readChunks(t, r, p, nil)
	t.Logf("%d chunks, round trip %v: read-ahead off %v, %d on %v", n, rtt, took0, k, took)
	if took0 < n*rtt {
		t.Fatalf("without read-ahead %d chunks took %v, less than %d round trips: the source is not slow", n, took0, n)
	}
	// n/k round trips, two for the misses that start the run, slack for
	// a loaded host.
	if want := (n/k + 2 + 4) * rtt; took > want {
		t.Errorf("with read-ahead %d, %d chunks took %v, want at most %v (~%d round trips)", k, n, took, want, n/k+2)
	}
	// A read that shared a read-ahead fetch may return before that
	// fetch's goroutine has counted it.
	r.WaitReadahead()
	st := r.Stats()
	if st.FetchedChunks != n || on.total() != n || st.Refetched != 0 {
		t.Errorf("fetched %d chunks (%d requests, %d again), want each of the %d once; the zero chunk never", st.FetchedChunks, on.total(), st.Refetched, n)
	}
	if st.AheadChunks < n-n/k-2 || st.AheadUsed != st.AheadChunks {
		t.Errorf("read ahead %d chunks, %d of them used; want most of %d, every one used", st.AheadChunks, st.AheadUsed, n)
	}
}

func TestReadsNeverWaitForReadAhead(t *testing.T) {
	const k = 4
	p := makeLongPartition(t, 24)
	src := newCounting(p.dir, "held")
	// The window after chunks 0 and 1 (a run) is held at the source
	// until released.
	release := make(chan struct{})
	held := map[string]bool{}
	for j := 2; j <= k+1; j++ {
		held[p.content.Chunks[j]] = true
	}
	var once sync.Once
	defer once.Do(func() { close(release) })
	src.hold = func(sum string) {
		if held[sum] {
			<-release
		}
	}
	r := newAheadReader(t, p, 64*cs, k, src)
	b := make([]byte, 100)
	for _, c := range []int{0, 1} {
		if err := r.ReadAt(t.Context(), b, int64(c*cs)); err != nil {
			t.Fatal(err)
		}
	}
	// Every slot is taken by a held fetch; reads elsewhere go on, and
	// their windows are cut short rather than waited for.
	done := make(chan error, 1)
	go func() {
		for _, c := range []int{20, 21, 10, 11, 15, 16} {
			if err := r.ReadAt(t.Context(), b, int64(c*cs)); err != nil {
				done <- err
				return
			}
			if !bytes.Equal(b, p.raw[c*cs:c*cs+100]) {
				done <- fmt.Errorf("chunk %d: wrong bytes", c)
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reads waited for read-ahead's held fetches")
	}
	for _, c := range []int{12, 17, 22} {
		if n := src.count(p.content.Chunks[c]); n != 0 {
			t.Errorf("chunk %d was asked for with every read-ahead slot busy", c)
		}
	}
	once.Do(func() { close(release) })
	// A read of a chunk read ahead shares its fetch.
	if err := r.ReadAt(t.Context(), b, 3*cs); err != nil || !bytes.Equal(b, p.raw[3*cs:3*cs+100]) {
		t.Fatalf("chunk 3: %v", err)
	}
	if n := src.count(p.content.Chunks[3]); n != 1 {
		t.Errorf("chunk 3, read ahead, was asked for %d times, want once", n)
	}
}

func TestReadAheadKeepsTheCacheBound(t *testing.T) {
	const bound = 4 * cs
	p := makeLongPartition(t, 30, 7, 8)
	src := newCounting(p.dir, "slow")
	src.delay = 2 * time.Millisecond
	r := newAheadReader(t, p, bound, 8, src)
	var most int64
	readChunks(t, r, p, func() { most = max(most, r.Stats().CachedBytes) })
	// Read-ahead still in flight lands after the last read.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		most = max(most, r.Stats().CachedBytes)
		time.Sleep(5 * time.Millisecond)
		if r.Stats().FetchedChunks >= 28 {
			break
		}
	}
	if most > bound {
		t.Errorf("the cache held %d bytes, bound %d", most, bound)
	}
	if st := r.Stats(); st.AheadChunks == 0 {
		t.Errorf("nothing was read ahead: %+v", st)
	}
}
