package fetch

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// link is one shared uplink: every connection of a throttled listener
// sends through it, piece by piece, at rate bytes per second in all.
type link struct {
	rate float64
	mu   sync.Mutex
	next time.Time // when the link is free again
}

const piece = 4 << 10

func (l *link) send(c net.Conn, p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		n := min(len(p), piece)
		l.mu.Lock()
		now := time.Now()
		at := l.next
		if at.Before(now) {
			at = now
		}
		l.next = at.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
		l.mu.Unlock()
		time.Sleep(time.Until(at))
		w, err := c.Write(p[:n])
		total += w
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	return total, nil
}

type slowListener struct {
	net.Listener
	l *link
}

func (s slowListener) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return slowConn{c, s.l}, nil
}

// slowConn hides the TCP connection's ReadFrom, so sendfile cannot go
// around the link.
type slowConn struct {
	net.Conn
	l *link
}

func (c slowConn) Write(p []byte) (int, error) { return c.l.send(c.Conn, p) }

// saturatedStore serves n random chunks of size bytes (stored as they are)
// from a store directory through one link of rate bytes/s.
func saturatedStore(t *testing.T, n, size int, rate float64) (string, []string, map[string][]byte) {
	t.Helper()
	root := t.TempDir()
	chunks := map[string][]byte{}
	var sums []string
	for range n {
		b := make([]byte, size)
		rand.Read(b)
		s := image.HashBytes(b)
		if err := os.MkdirAll(filepath.Join(root, "chunks", s[:2]), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "chunks", s[:2], s), b, 0o644); err != nil {
			t.Fatal(err)
		}
		chunks[s] = b
		sums = append(sums, s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(root))}
	go srv.Serve(slowListener{ln, &link{rate: rate}})
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/", sums, chunks
}

// TestASaturatedServerSlowsAFetchButDoesNotFailIt: 16 workers fetch 24
// chunks of 256 KiB from one server whose link carries 1 MB/s for all of
// them. Each chunk takes several times the stall timeout (and the
// response header timeout) from request to last byte, yet never stops
// moving: every chunk must come, and the whole fetch takes as long as the
// link needs. A whole-request timeout as long as the stall timeout (what
// store.OpenHTTP had, at 2 minutes) fails this.
func TestASaturatedServerSlowsAFetchButDoesNotFailIt(t *testing.T) {
	const n, size, rate = 24, 256 << 10, 1 << 20
	base, sums, _ := saturatedStore(t, n, size, rate)
	const stall = 400 * time.Millisecond
	src, err := store.OpenHTTPWith(base, store.HTTPOptions{Header: stall, Stall: stall, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	o := fast()
	var warnings atomic.Int32
	o.OnError = func(i int, what string, err error) {
		warnings.Add(1)
		t.Logf("warning: %s: %v", what, err)
	}
	f := New([]store.Source{src}, o)
	start := time.Now()
	var slowest atomic.Int64
	work := make(chan string)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sum := range work {
				t0 := time.Now()
				err := f.Chunk(t.Context(), sum, size, nil, check(sum))
				if d := int64(time.Since(t0)); d > slowest.Load() {
					slowest.Store(d)
				}
				errs <- err
			}
		}()
	}
	for _, s := range sums {
		work <- s
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	took := time.Since(start)
	if got := f.BytesFrom()[0]; got != n*size {
		t.Errorf("%d bytes fetched, want %d", got, n*size)
	}
	// Proof the test tests something: chunks took far longer than the
	// timeouts, as a saturated link does.
	if d := time.Duration(slowest.Load()); d < 3*stall {
		t.Errorf("slowest chunk took %s: the link was not saturated (want over %s)", d, 3*stall)
	}
	t.Logf("%d chunks of %d KiB in %s (link: %.1f s of data), slowest chunk %s, %d warnings",
		n, size>>10, took.Round(time.Millisecond), float64(n*size)/rate, time.Duration(slowest.Load()).Round(time.Millisecond), warnings.Load())
}

// TestAServerThatStopsMidBodyIsDetected: a server that sends headers and
// part of the body, then nothing, fails the request within the stall
// timeout (ErrNoProgress), where a whole-request timeout would wait its
// full length.
func TestAServerThatStopsMidBodyIsDetected(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(1<<20))
		w.Write(make([]byte, 64<<10))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	const stall = 300 * time.Millisecond
	src, err := store.OpenHTTPWith("http://"+ln.Addr().String()+"/", store.HTTPOptions{Stall: stall})
	if err != nil {
		t.Fatal(err)
	}
	sum := image.HashBytes([]byte("never sent"))
	start := time.Now()
	_, err = src.Chunk(t.Context(), sum)
	took := time.Since(start)
	if !errors.Is(err, store.ErrNoProgress) {
		t.Fatalf("err %v, want ErrNoProgress", err)
	}
	if took > 5*stall {
		t.Fatalf("the stop was noticed after %s, stall timeout %s", took, stall)
	}
}

// TestAResetFromASourceThatStillAnswersIsRetried: a lone source resets
// the connection for one chunk more often than Tries allows, while it
// gives other chunks meanwhile. It is saturated, not dead: the chunk is
// asked again until it comes, and the source is not passed over.
func TestAResetFromASourceThatStillAnswersIsRetried(t *testing.T) {
	sums, chunks := testChunks(2)
	hard, easy := sums[0], sums[1]
	var f *Fetcher
	var resets atomic.Int32
	src := &fake{name: "busy", answer: func(_ int, s string) ([]byte, error) {
		if s == hard && resets.Load() < 5 {
			// Fails only after the source gave something since.
			before := f.BytesFrom()[0]
			for f.BytesFrom()[0] == before {
				time.Sleep(time.Millisecond)
			}
			resets.Add(1)
			return nil, fmt.Errorf("read tcp: %w", syscall.ECONNRESET)
		}
		return chunks[s], nil
	}}
	o := fast()
	o.Tries = 3
	f = New([]store.Source{src}, o)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			f.Chunk(ctx, easy, 1000, nil, check(easy))
		}
	}()
	if err := f.Chunk(t.Context(), hard, 1000, nil, check(hard)); err != nil {
		t.Fatalf("a source that still answers was given up: %v", err)
	}
	if n := resets.Load(); n != 5 {
		t.Fatalf("%d resets, want 5", n)
	}
}

// TestAResetFromASourceThatGivesNothingCounts: the same resets from a
// source that gives nothing else are failures: Tries of them and the
// chunk is given up on (a dead server is still detected).
func TestAResetFromASourceThatGivesNothingCounts(t *testing.T) {
	sums, _ := testChunks(1)
	src := &fake{name: "dead", answer: func(int, string) ([]byte, error) {
		return nil, fmt.Errorf("read tcp: %w", syscall.ECONNRESET)
	}}
	o := fast()
	o.Tries = 3
	f := New([]store.Source{src}, o)
	if err := f.Chunk(t.Context(), sums[0], 1000, nil, check(sums[0])); err == nil {
		t.Fatal("a source that only resets gave the chunk")
	}
	if n := src.calls.Load(); n != 3 {
		t.Fatalf("asked %d times, want Tries = 3", n)
	}
}
