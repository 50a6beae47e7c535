package ondemand_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/store"
)

// newFaultSliceReader is newSliceReader over srcs, with fo, 32 KiB
// windows, and waits said after 20 ms, every 50 ms.
func newFaultSliceReader(t *testing.T, im sliceImage, fo fetch.Options, srcs ...store.Source) *sliceReader {
	t.Helper()
	return sliceReaderOver(t, im, 32<<10, fo, func(o *ondemand.Options) {
		o.SlowAfter, o.SayEvery = 20*time.Millisecond, 50*time.Millisecond
	}, srcs...)
}

// hangingSeed answers no range request until the request ends.
func hangingSeed(http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
}

// TestAWindowWithNoAnswerIsSaidAsAWait: a web seed that does not answer
// is said on the console as a chunk's source is, naming the pieces and
// their chunk, before the read ends.
func TestAWindowWithNoAnswerIsSaidAsAWait(t *testing.T) {
	im := newSliceImage(t, true)
	srv := newSeedServer(t, im, hangingSeed)
	r := newFaultSliceReader(t, im, fast(), httpSrc(t, srv.url))
	ctx, cancel := context.WithTimeout(t.Context(), 600*time.Millisecond)
	defer cancel()
	r.ReadAt(ctx, make([]byte, 100), 100)
	if said := r.said(); !strings.Contains(said, "root source slow: no answer yet for pieces 4-5 (bytes 0-32767 of chunk 0)") {
		t.Fatalf("said %q; want the window's wait", said)
	}
}

// TestAWindowWithNoAnswerGivesWayToTheChunk: the piece path is one try,
// bounded in time: when it has no answer the read takes the whole chunk,
// and says why.
func TestAWindowWithNoAnswerGivesWayToTheChunk(t *testing.T) {
	im := newSliceImage(t, true)
	srv := newSeedServer(t, im, hangingSeed)
	fo := fast()
	fo.WebSeedTimeout = 100 * time.Millisecond
	r := newFaultSliceReader(t, im, fo, httpSrc(t, srv.url))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	begin := time.Now()
	got := make([]byte, 100)
	if err := r.ReadAt(ctx, got, 100); err != nil || string(got) != string(im.raw[100:200]) {
		t.Fatalf("%v after %v; want the bytes, from the chunk", err, time.Since(begin))
	}
	if srv.ranges.Load() != 1 || srv.chunks.Load() != 1 {
		t.Fatalf("%d range requests, %d chunk requests; want one each", srv.ranges.Load(), srv.chunks.Load())
	}
	if said := r.said(); !strings.Contains(said, "no answer in") || !strings.Contains(said, "reading chunk 0 whole") {
		t.Fatalf("said %q; want the piece path's end said", said)
	}
}

// TestAFailingWebSeedIsTurnedOffSaidOnceAndTheChunksStayWithItsSource:
// a web seed that answers 500 is asked once a miss, then turned off and
// said once; its source still serves the chunks.
func TestAFailingWebSeedIsTurnedOffSaidOnceAndTheChunksStayWithItsSource(t *testing.T) {
	im := newSliceImage(t, true)
	a := newSeedServer(t, im, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusInternalServerError) })
	})
	b := newSeedServer(t, im, nil)
	r := newFaultSliceReader(t, im, fast(), httpSrc(t, a.url), httpSrc(t, b.url))
	for _, c := range []int64{0, 1, 4, 5} {
		begin := time.Now()
		readCheck(t, r, im.raw, c*cs+100, 100)
		if took := time.Since(begin); took > 300*time.Millisecond {
			t.Errorf("chunk %d: %v; want no retries of the web seed", c, took)
		}
	}
	if a.ranges.Load() != 3 || a.chunks.Load() != 4 || b.chunks.Load() != 0 {
		t.Fatalf("a: %d range requests, %d chunks; b: %d chunks; want a: 3 range requests, every chunk", a.ranges.Load(), a.chunks.Load(), b.chunks.Load())
	}
	if said := r.console(); strings.Count(said, "web seed off") != 1 {
		t.Fatalf("said %q; want the web seed off said once", said)
	}
}

// TestAForbiddenWebSeedIsNoWebSeed: a 403 (a bucket's missing key) is
// "no web seed here", for good: asked once, said once, and its source
// keeps the chunks.
func TestAForbiddenWebSeedIsNoWebSeed(t *testing.T) {
	im := newSliceImage(t, true)
	a := newSeedServer(t, im, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "AccessDenied", http.StatusForbidden) })
	})
	b := newSeedServer(t, im, nil)
	r := newFaultSliceReader(t, im, fast(), httpSrc(t, a.url), httpSrc(t, b.url))
	for _, c := range []int64{0, 1, 4, 5} {
		readCheck(t, r, im.raw, c*cs+100, 100)
	}
	if a.ranges.Load() != 1 || b.ranges.Load() != 1 || a.chunks.Load() != 4 || b.chunks.Load() != 0 {
		t.Fatalf("a: %d range requests, %d chunks; b: %d range requests, %d chunks; want one range request each, a every chunk",
			a.ranges.Load(), a.chunks.Load(), b.ranges.Load(), b.chunks.Load())
	}
	if said := r.said(); strings.Count(said, "no source serves the swarm web seed") != 1 || strings.Contains(said, "passed over") {
		t.Fatalf("said %q; want no web seed said once, no source passed over", said)
	}
}

// wrongLength is a WebSeeder (over a store directory) that answers a
// range of n bytes with size(n) bytes: the real web seed's, cut short or
// followed by zeros.
type wrongLength struct {
	*store.Dir
	real fetch.WebSeeder
	size func(n int64) int64
}

func (w wrongLength) WebSeed(ctx context.Context, name, version string, off, n int64) ([]byte, error) {
	b, err := w.real.WebSeed(ctx, name, version, off, n)
	if err != nil {
		return nil, err
	}
	out := make([]byte, w.size(n))
	copy(out, b)
	return out, nil
}

// TestAWebSeedAnswerOfTheWrongLengthIsRefused: any WebSeeder's answer is
// checked for its length before its pieces: a short or a long one is
// refused, and the read takes the whole chunk (no panic, no spin).
func TestAWebSeedAnswerOfTheWrongLengthIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		size func(n int64) int64
	}{
		{"empty", func(int64) int64 { return 0 }},
		{"a piece short", func(n int64) int64 { return n - testPiece }},
		{"one byte more", func(n int64) int64 { return n + 1 }},
		{"a piece more", func(n int64) int64 { return n + testPiece }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := newSliceImage(t, true)
			real := httpSrc(t, newSeedServer(t, im, plainSeed).url).(fetch.WebSeeder)
			r := newFaultSliceReader(t, im, fast(), wrongLength{im.dir, real, tc.size})
			for _, off := range []int64{0, 24 << 10, cs + 100} {
				done := make(chan error, 1)
				got := make([]byte, 100)
				go func() { done <- r.ReadAt(t.Context(), got, off) }()
				select {
				case err := <-done:
					if err != nil || string(got) != string(im.raw[off:off+100]) {
						t.Fatalf("at %d: %v; want the bytes", off, err)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("at %d: no answer in 2 s", off)
				}
			}
			if st := r.Stats(); st.Pieces != 0 || st.PieceFallbacks == 0 || st.FetchedChunks != 2 {
				t.Fatalf("%+v; want no piece taken, two whole chunks", st)
			}
		})
	}
}

// TestConcurrentReadsOfOneWindowShareItsFetch: reads of one window at
// once make one range request; when it fails (bytes that do not check)
// every one of them reads the whole chunk.
func TestConcurrentReadsOfOneWindowShareItsFetch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		seed   func(http.Handler) http.Handler
		ranges int64
	}{{"pieces", plainSeed, 1}, {"pieces refused", tamperedSeed, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			im := newSliceImage(t, true)
			srv := newSeedServer(t, im, tc.seed)
			r := newSliceReader(t, im, 32<<10, srv.url)
			var wg sync.WaitGroup
			for k := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got := make([]byte, 1000)
					if err := r.ReadAt(t.Context(), got, 100+int64(k)); err != nil || string(got) != string(im.raw[100+k:1100+k]) {
						t.Errorf("reader %d: %v, or wrong bytes", k, err)
					}
				}()
			}
			wg.Wait()
			if n := srv.ranges.Load(); n != tc.ranges {
				t.Fatalf("%d range requests; want %d", n, tc.ranges)
			}
		})
	}
}

// TestAWindowFetchCutShortByOneReaderIsNotTheOthersEnd: the reader whose
// context started a window's fetch gives up; the others reading it fetch
// it again and get their bytes.
func TestAWindowFetchCutShortByOneReaderIsNotTheOthersEnd(t *testing.T) {
	im := newSliceImage(t, true)
	var mu sync.Mutex
	first := true
	srv := newSeedServer(t, im, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hang := first
			first = false
			mu.Unlock()
			if hang {
				<-r.Context().Done()
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	r := newSliceReader(t, im, 32<<10, srv.url)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.ReadAt(ctx, make([]byte, 100), 100) }()
	for srv.ranges.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	for k := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]byte, 100)
			if err := r.ReadAt(t.Context(), got, 200+int64(k)); err != nil || string(got) != string(im.raw[200+k:300+k]) {
				t.Errorf("reader %d: %v, or wrong bytes", k, err)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the cancelled read succeeded")
	}
	wg.Wait()
	if st := r.Stats(); st.Pieces == 0 || st.FetchedChunks != 0 {
		t.Fatalf("%+v; want the window fetched again, as pieces", st)
	}
}

// console is what the reader said, without the fetcher's errors.
func (s *sliceReader) console() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.logs, "\n")
}

// canceledSeed is a web seed whose every answer wraps context.Canceled (a
// proxy's), its own request alive.
type canceledSeed struct {
	*store.Dir
	n *atomic.Int32
}

func (c canceledSeed) WebSeed(ctx context.Context, name, version string, off, n int64) ([]byte, error) {
	c.n.Add(1)
	return nil, fmt.Errorf("proxy: %w", context.Canceled)
}

// TestASeedsCanceledIsOneRangeRequestPerMiss: a web seed's error that
// wraps context.Canceled, the read's context alive, is that seed's
// failure: the read takes the whole chunk after one range request, not
// several (which turned the seed off inside one read).
func TestASeedsCanceledIsOneRangeRequestPerMiss(t *testing.T) {
	im := newSliceImage(t, true)
	var n atomic.Int32
	r := newFaultSliceReader(t, im, fast(), canceledSeed{im.dir, &n})
	readCheck(t, r, im.raw, 100, 100)
	if n.Load() != 1 {
		t.Fatalf("%d range requests for one read, want 1; said %q", n.Load(), r.said())
	}
	if st := r.Stats(); st.FetchedChunks != 1 || st.PieceFallbacks != 1 {
		t.Fatalf("%d whole chunks, %d fallbacks; want the chunk whole, once", st.FetchedChunks, st.PieceFallbacks)
	}
}

// firstWholeSeed answers its first range request with the whole file
// (200, as a caching proxy's first miss), the ones after with the range.
func firstWholeSeed(h http.Handler) http.Handler {
	var n atomic.Int32
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			r.Header.Del("Range")
		}
		h.ServeHTTP(w, r)
	})
}

// TestARangeIgnoredOnceDoesNotTurnPiecesOff: a 200 for a range request is
// a failure for now, not "no web seed": later misses get pieces.
func TestARangeIgnoredOnceDoesNotTurnPiecesOff(t *testing.T) {
	im := newSliceImage(t, true)
	srv := newSeedServer(t, im, firstWholeSeed)
	r := newFaultSliceReader(t, im, fast(), httpSrc(t, srv.url))
	for _, off := range []int64{100, 4*cs + 100, 5*cs + 100} {
		readCheck(t, r, im.raw, off, 100)
	}
	if st := r.Stats(); st.Pieces == 0 || srv.ranges.Load() != 3 {
		t.Fatalf("%d pieces, %d range requests after a 200; want pieces, a range request a miss; said %q", st.Pieces, srv.ranges.Load(), r.said())
	}
}
