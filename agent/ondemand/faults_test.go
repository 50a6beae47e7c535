package ondemand_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// server is an HTTP store on loopback that can be killed and brought
// back on the same port, as a root server restarted by its operator.
type server struct {
	t    testing.TB
	addr string
	h    http.Handler
	srv  *http.Server
}

func startServer(t *testing.T, h http.Handler) *server {
	s := &server{t: t, addr: "127.0.0.1:0", h: h}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *server) start() {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{Handler: s.h}
	go s.srv.Serve(ln)
}

// kill closes the listener and every connection: what the node sees of
// a server process killed.
func (s *server) kill() { s.srv.Close() }

func (s *server) url() string { return "http://" + s.addr + "/" }

func httpSource(t *testing.T, s *server) store.Source {
	src, err := store.OpenSource(s.url())
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// logs collects what a reader says.
type logs struct {
	mu    sync.Mutex
	lines []string
	at    []time.Time
}

func (l *logs) logf(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, sprintf(f, a...))
	l.at = append(l.at, time.Now())
}

func (l *logs) matching(sub string) (lines []string, at []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, s := range l.lines {
		if strings.Contains(s, sub) {
			lines, at = append(lines, s), append(at, l.at[i])
		}
	}
	return lines, at
}

func newHTTPReader(t *testing.T, p partition, o ondemand.Options, fo fetch.Options, srcs ...store.Source) (*ondemand.Reader, *logs) {
	t.Helper()
	dec, err := image.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	l := &logs{}
	o.Content, o.ChunkSize, o.Decoder, o.Fetcher, o.Logf = p.content, cs, dec, fetch.New(srcs, fo), l.logf
	if o.CacheBytes == 0 {
		o.CacheBytes = 1 << 30
	}
	r, err := ondemand.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return r, l
}

func readAsync(r *ondemand.Reader, ctx context.Context, off int64, n int) (<-chan []byte, <-chan error) {
	got, errc := make(chan []byte, 1), make(chan error, 1)
	go func() {
		b := make([]byte, n)
		if err := r.ReadAt(ctx, b, off); err != nil {
			errc <- err
			return
		}
		got <- b
	}()
	return got, errc
}

// The only server killed: reads wait (no error), the wait is said at once
// and then once per SayEvery however often the chunk is asked for again,
// and reads resume with the right bytes once the server is back on its
// port, saying so.
func TestAKilledServerIsWaitedForSaidAtItsCadenceAndResumed(t *testing.T) {
	p := makePartition(t)
	srv := startServer(t, http.FileServer(http.Dir(p.dir.Root)))
	const every = 100 * time.Millisecond
	r, l := newHTTPReader(t, p, ondemand.Options{RetryMin: 2 * time.Millisecond, RetryMax: 5 * time.Millisecond, SayEvery: every}, fast(), httpSource(t, srv))
	b := make([]byte, 100)
	if err := r.ReadAt(t.Context(), b, 0); err != nil || !bytes.Equal(b, p.raw[:100]) {
		t.Fatalf("with the server up: %v", err)
	}
	srv.kill()
	killed := time.Now()
	// Two reads of two chunks not read yet wait together.
	got1, err1 := readAsync(r, t.Context(), cs+10, 100)
	got3, err3 := readAsync(r, t.Context(), 3*cs+10, 100)
	const down = 550 * time.Millisecond
	time.Sleep(down)
	select {
	case err := <-err1:
		t.Fatalf("a read failed while the server was down: %v", err)
	case <-got1:
		t.Fatal("a read of a chunk never fetched returned with the server down")
	default:
	}
	if st := r.Stats(); st.Waiting != 2 {
		t.Errorf("%d chunks waiting, want 2", st.Waiting)
	}
	srv.start()
	back := time.Now()
	for _, c := range []struct {
		got  <-chan []byte
		err  <-chan error
		want []byte
	}{{got1, err1, p.raw[cs+10 : cs+110]}, {got3, err3, p.raw[3*cs+10 : 3*cs+110]}} {
		select {
		case b := <-c.got:
			if !bytes.Equal(b, c.want) {
				t.Error("a read that waited gave wrong bytes")
			}
		case err := <-c.err:
			t.Fatalf("a read that waited failed: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("reads did not resume within 10 s of the server's return")
		}
	}
	ended := time.Now()
	resumed := ended.Sub(back)
	said, at := l.matching("unreachable, waiting")
	if len(said) == 0 || !strings.Contains(said[0], srv.url()) || !strings.Contains(said[0], "chunk ") || !strings.HasSuffix(said[0], "connection refused") {
		t.Fatalf("the wait was not said naming the server, the chunk and the cause:\n%s", strings.Join(l.lines, "\n"))
	}
	// At once: the first failed fetch says it; a second of slack for a
	// loaded machine, still far less than the SayEvery default (10 s).
	if first := at[0].Sub(killed); first > time.Second {
		t.Errorf("the wait was first said %v after the kill, want at once", first)
	}
	// Asked again every few ms, said every 100 ms: ~6 lines in 550 ms.
	// Every line was said between the kill and the reads' end, at least
	// every apart, so the wait measured bounds them however slow the
	// machine was.
	waited := ended.Sub(killed)
	if n, most := len(said), 1+int(waited/every); n < 3 || n > most {
		t.Errorf("the wait was said %d times in %v at one line per %v (want 3..%d):\n%s", n, waited, every, most, strings.Join(said, "\n"))
	}
	if ends, _ := l.matching("root source back"); len(ends) != 1 {
		t.Errorf("the end of the wait was said %d times, want once:\n%s", len(ends), strings.Join(l.lines, "\n"))
	}
	if st := r.Stats(); st.Waiting != 0 {
		t.Errorf("%d chunks still waiting", st.Waiting)
	}
	t.Logf("wait said %d times in %v (every %v); reads resumed %v after the server came back", len(said), down, every, resumed.Round(time.Millisecond))
}

// The first of two servers killed: the second gives the chunks at once,
// nobody waits.
func TestAKilledServerFailsOverToTheNextSource(t *testing.T) {
	p := makePartition(t)
	a := startServer(t, http.FileServer(http.Dir(p.dir.Root)))
	bsrv := startServer(t, http.FileServer(http.Dir(p.dir.Root)))
	r, l := newHTTPReader(t, p, ondemand.Options{}, fetch.Options{}, httpSource(t, a), httpSource(t, bsrv))
	b := make([]byte, 100)
	if err := r.ReadAt(t.Context(), b, 0); err != nil {
		t.Fatal(err)
	}
	a.kill()
	begin := time.Now()
	if err := r.ReadAt(t.Context(), b, cs); err != nil || !bytes.Equal(b, p.raw[cs:cs+100]) {
		t.Fatalf("after the first server was killed: %v", err)
	}
	took := time.Since(begin)
	if took > 2*time.Second {
		t.Errorf("failing over took %v", took)
	}
	if said, _ := l.matching("waiting"); len(said) > 0 {
		t.Errorf("a wait was said with a second source up:\n%s", strings.Join(said, "\n"))
	}
	t.Logf("failed over to the second server in %v", took.Round(time.Microsecond))
}

// A server that sends another chunk's bytes for chunk 1: refused, said
// (the root server's console line comes from fetch's OnError), and
// fetched from the next server; the wrong bytes never reach the reader.
func TestAWrongChunkFromAServerIsRefusedSaidAndFetchedElsewhere(t *testing.T) {
	p := makePartition(t)
	files := http.FileServer(http.Dir(p.dir.Root))
	wrong, right := p.content.Chunks[1], p.content.Chunks[0]
	var lies atomic.Int32
	liar := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/"+wrong) {
			lies.Add(1)
			req.URL.Path = "/chunks/" + right[:2] + "/" + right
		}
		files.ServeHTTP(w, req)
	}))
	good := startServer(t, files)
	var mu sync.Mutex
	var refused []string
	fo := fetch.Options{OnError: func(i int, what string, err error) {
		if errors.Is(err, image.ErrChecksum) {
			mu.Lock()
			refused = append(refused, sprintf("source %d: %s: %v", i, what, err))
			mu.Unlock()
		}
	}}
	r, _ := newHTTPReader(t, p, ondemand.Options{}, fo, httpSource(t, liar), httpSource(t, good))
	b := make([]byte, cs)
	if err := r.ReadAt(t.Context(), b, cs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, p.raw[cs:2*cs]) {
		t.Fatal("the reader gave the liar's bytes")
	}
	mu.Lock()
	defer mu.Unlock()
	if lies.Load() == 0 || len(refused) == 0 || !strings.HasPrefix(refused[0], "source 0: chunk "+wrong) {
		t.Errorf("%d lies told, refusals heard: %q; want the liar's chunk refused", lies.Load(), refused)
	}
}

// With Fill, every chunk ends up in RAM past a cache bound of one chunk,
// and the partition reads whole with its only server killed.
func TestAFilledRootReadsWithItsServerGone(t *testing.T) {
	p := makePartition(t)
	srv := startServer(t, http.FileServer(http.Dir(p.dir.Root)))
	r, l := newHTTPReader(t, p, ondemand.Options{Fill: true, CacheBytes: cs, RetryMin: time.Millisecond, RetryMax: time.Millisecond}, fast(), httpSource(t, srv))
	if err := r.Fill(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	nonZero := int64(len(p.raw) - cs)
	if st.CachedBytes != nonZero || st.FillBytes != nonZero {
		t.Errorf("after Fill: %d bytes cached, %d filled; want the %d non-zero bytes", st.CachedBytes, st.FillBytes, nonZero)
	}
	srv.kill()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	all := make([]byte, len(p.raw))
	if err := r.ReadAt(ctx, all, 0); err != nil || !bytes.Equal(all, p.raw) {
		t.Fatalf("reading the filled root with its server gone: %v", err)
	}
	if said, _ := l.matching("waiting"); len(said) > 0 {
		t.Errorf("a filled root waited:\n%s", strings.Join(said, "\n"))
	}
}

// Fill starts no chunk while a read waits for one: with a read of chunk 3
// held up at the source, Fill asks for nothing; once the read is
// answered, Fill fetches the rest, each chunk once.
func TestFillYieldsToReads(t *testing.T) {
	p := makePartition(t)
	src := newCounting(p.dir, "store")
	gate := make(chan struct{})
	held := p.content.Chunks[3]
	src.hold = func(sum string) {
		if sum == held {
			<-gate
		}
	}
	r, _ := newHTTPReader(t, p, ondemand.Options{Fill: true}, fast(), src)
	got, errc := readAsync(r, t.Context(), 3*cs, 100)
	for src.count(held) == 0 {
		time.Sleep(time.Millisecond)
	}
	filled := make(chan error, 1)
	go func() { filled <- r.Fill(t.Context()) }()
	time.Sleep(100 * time.Millisecond)
	if n := src.total(); n != 1 {
		t.Fatalf("Fill made %d requests while a read waited for its chunk, want none", n-1)
	}
	close(gate)
	select {
	case b := <-got:
		if !bytes.Equal(b, p.raw[3*cs:3*cs+100]) {
			t.Error("wrong bytes")
		}
	case err := <-errc:
		t.Fatal(err)
	}
	if err := <-filled; err != nil {
		t.Fatal(err)
	}
	for i, sum := range p.content.Chunks {
		if want := map[bool]int{true: 0, false: 1}[sum == image.ZeroChunk]; src.count(sum) != want {
			t.Errorf("chunk %d asked %d times, want %d", i, src.count(sum), want)
		}
	}
}

func TestFillNeedsAReaderMadeForIt(t *testing.T) {
	p := makePartition(t)
	r, _ := newHTTPReader(t, p, ondemand.Options{}, fast(), newCounting(p.dir, "store"))
	if err := r.Fill(t.Context()); !errors.Is(err, ondemand.ErrNoFill) {
		t.Errorf("Fill on a reader without Options.Fill: %v, want ErrNoFill", err)
	}
}

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }

// The fill's throughput from one HTTP server on loopback: 64 MiB of
// random data (incompressible, so the cost is transfer, zstd framing and
// hashing) in 1 MiB chunks, the image's default.
func BenchmarkFillOverLoopbackHTTP(b *testing.B) {
	const size, chunk = 64 << 20, image.DefaultChunkSize
	raw := make([]byte, size)
	rand.Read(raw)
	d, err := store.CreateDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	c := &image.Content{Size: size, SHA256: image.HashBytes(raw)}
	for off := 0; off < size; off += chunk {
		sum := image.HashBytes(raw[off : off+chunk])
		if _, err := d.PutChunk(sum, raw[off:off+chunk]); err != nil {
			b.Fatal(err)
		}
		c.Chunks = append(c.Chunks, sum)
	}
	srv := &server{t: b, addr: "127.0.0.1:0", h: http.FileServer(http.Dir(d.Root))}
	srv.start()
	defer srv.kill()
	dec, err := image.NewDecoder()
	if err != nil {
		b.Fatal(err)
	}
	defer dec.Close()
	src, err := store.OpenSource(srv.url())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		r, err := ondemand.New(ondemand.Options{Content: c, ChunkSize: chunk, Decoder: dec, Fetcher: fetch.New([]store.Source{src}, fetch.Options{}), Fill: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Fill(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// A server that stops answering without a reset (powered off, its link
// cut) holds a fetch until the HTTP client's timeout; the read's wait is
// said once SlowAfter passes with no answer, repeated every SayEvery, and
// its end is said when the answer comes.
func TestAFetchWithNoAnswerIsSaidAsAWait(t *testing.T) {
	p := makePartition(t)
	files := http.FileServer(http.Dir(p.dir.Root))
	var hang atomic.Bool
	release := make(chan struct{})
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		if hang.Load() {
			select {
			case <-release:
			case <-q.Context().Done():
				return
			}
		}
		files.ServeHTTP(w, q)
	}))
	const slow, every = 200 * time.Millisecond, 100 * time.Millisecond
	r, l := newHTTPReader(t, p, ondemand.Options{SlowAfter: slow, SayEvery: every}, fast(), httpSource(t, srv))
	b := make([]byte, 100)
	if err := r.ReadAt(t.Context(), b, 0); err != nil || !bytes.Equal(b, p.raw[:100]) {
		t.Fatalf("with the server answering: %v", err)
	}
	if said, _ := l.matching("root source"); len(said) != 0 {
		t.Fatalf("a wait was said while the server answered: %q", said)
	}
	hang.Store(true)
	start := time.Now()
	got, errc := readAsync(r, t.Context(), cs+10, 100)
	// Said after SlowAfter, then again every SayEvery: wait for two lines
	// (a loaded host may be slow to run the watch; the times are checked
	// against when each line was said, below).
	var said []string
	var at []time.Time
	for deadline := time.Now().Add(5 * time.Second); len(said) < 2 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		said, at = l.matching("root source slow")
	}
	select {
	case <-got:
		t.Fatal("a read returned while its server did not answer")
	case err := <-errc:
		t.Fatalf("a read failed while its server did not answer: %v", err)
	default:
	}
	if len(said) < 2 || !strings.Contains(said[0], "no answer yet for chunk 1 after") {
		t.Fatalf("the wait for no answer was not said, then repeated:\n%s", strings.Join(l.lines, "\n"))
	}
	if bad, _ := l.matching("unreachable"); len(bad) != 0 {
		t.Errorf("a slow source was called unreachable: %q", bad)
	}
	if first := at[0].Sub(start); first < slow || first > slow+time.Second {
		t.Errorf("the wait was first said %v after the read, SlowAfter is %v", first, slow)
	}
	if st := r.Stats(); st.Waiting != 1 {
		t.Errorf("%d chunks waiting, want 1", st.Waiting)
	}
	close(release)
	select {
	case b := <-got:
		if !bytes.Equal(b, p.raw[cs+10:cs+110]) {
			t.Error("the read that waited gave wrong bytes")
		}
	case err := <-errc:
		t.Fatalf("the read that waited failed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the read did not end once the server answered")
	}
	if ends, _ := l.matching("root source back"); len(ends) != 1 {
		t.Errorf("the end of the wait was said %d times, want once:\n%s", len(ends), strings.Join(l.lines, "\n"))
	}
	if st := r.Stats(); st.Waiting != 0 {
		t.Errorf("%d chunks still waiting", st.Waiting)
	}
}
