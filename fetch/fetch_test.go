package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

// fake is a source in memory whose answers a test scripts. Its chunks are
// stored as their plain bytes: what the bytes are is the accept
// function's business, not fetch's.
type fake struct {
	name   string
	chunks map[string][]byte
	// answer, when set, decides call n (from 1) for sum instead of chunks.
	answer func(n int, sum string) ([]byte, error)
	calls  atomic.Int32
}

func (f *fake) String() string { return f.name }
func (f *fake) Index(context.Context) (*store.Index, error) {
	return nil, fmt.Errorf("index: %w", store.ErrNotFound)
}
func (f *fake) Manifest(context.Context, string, string) ([]byte, error) {
	return nil, fmt.Errorf("manifest: %w", store.ErrNotFound)
}
func (f *fake) Signature(context.Context, string, string) ([]byte, error) {
	return nil, fmt.Errorf("signature: %w", store.ErrNotFound)
}
func (f *fake) Chunk(ctx context.Context, sum string) ([]byte, error) {
	n := int(f.calls.Add(1))
	if f.answer != nil {
		return f.answer(n, sum)
	}
	if b, ok := f.chunks[sum]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("chunk %s on %s: %w", sum, f.name, store.ErrNotFound)
}

// testChunks makes n random chunks, by name.
func testChunks(n int) ([]string, map[string][]byte) {
	m := map[string][]byte{}
	var sums []string
	for range n {
		b := make([]byte, 1000)
		rand.Read(b)
		s := image.HashBytes(b)
		m[s] = b
		sums = append(sums, s)
	}
	return sums, m
}

// check is the accept function of a copier, without compression.
func check(sum string) func([]byte) error {
	return func(b []byte) error {
		if image.HashBytes(b) != sum {
			return fmt.Errorf("chunk %s: %w", sum, image.ErrChecksum)
		}
		return nil
	}
}

// fast are options that make every wait of a test short.
func fast() Options {
	return Options{DownFor: 200 * time.Millisecond, Backoff: 10 * time.Millisecond, Poll: 5 * time.Millisecond,
		PollMax: 20 * time.Millisecond, HedgeAfter: 100 * time.Millisecond, StallAfter: 300 * time.Millisecond}
}

func TestChunkSourceChoice(t *testing.T) {
	sums, chunks := testChunks(1)
	sum := sums[0]
	good := func() *fake { return &fake{name: "good", chunks: chunks} }
	failing := func() *fake {
		return &fake{name: "sick", answer: func(int, string) ([]byte, error) { return nil, errors.New("503 Service Unavailable") }}
	}
	missing := func() *fake { return &fake{name: "empty", chunks: map[string][]byte{}} }
	liar := func() *fake {
		return &fake{name: "liar", answer: func(int, string) ([]byte, error) { return []byte("forged"), nil }}
	}
	drifted := func() *fake {
		return &fake{name: "drifted", answer: func(int, string) ([]byte, error) {
			return nil, fmt.Errorf("409: %w: the server refused it as drifted", image.ErrChecksum)
		}}
	}
	blip := func() *fake {
		return &fake{name: "blip", answer: func(n int, s string) ([]byte, error) {
			if n == 1 {
				return nil, errors.New("connection reset")
			}
			return chunks[s], nil
		}}
	}
	for _, tc := range []struct {
		name      string
		srcs      []*fake
		from      int   // source that gives it; -1: none
		calls     []int // requests per source
		complaint []int // sources OnError heard about
		errHas    []error
	}{
		{"the first source is preferred", []*fake{good(), good()}, 0, []int{1, 0}, nil, nil},
		{"failover on error", []*fake{failing(), good()}, 1, []int{1, 1}, []int{0}, nil},
		{"failover on not found", []*fake{missing(), good()}, 1, []int{1, 1}, []int{0}, nil},
		{"failover on bad bytes", []*fake{liar(), good()}, 1, []int{1, 1}, []int{0}, nil},
		{"failover on a chunk refused as drifted", []*fake{drifted(), good()}, 1, []int{1, 1}, []int{0}, nil},
		{"a lone source is retried after a failure", []*fake{blip()}, 0, []int{2}, []int{0}, nil},
		{"a failed source is retried once the others are out", []*fake{blip(), missing()}, 0, []int{2, 1}, []int{0, 1}, nil},
		{"all fail", []*fake{failing(), missing(), liar()}, -1, []int{3, 1, 1}, []int{0, 1, 2, 0, 0},
			[]error{store.ErrNotFound, image.ErrChecksum}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srcs []store.Source
			for _, s := range tc.srcs {
				srcs = append(srcs, s)
			}
			var mu sync.Mutex
			var heard []int
			o := fast()
			o.OnError = func(i int, what string, err error) {
				if what != "chunk "+sum {
					t.Errorf("complaint about %q", what)
				}
				mu.Lock()
				heard = append(heard, i)
				mu.Unlock()
			}
			f := New(srcs, o)
			err := f.Chunk(t.Context(), sum, 1000, nil, check(sum))
			if tc.from < 0 {
				if err == nil {
					t.Fatal("no source has it right, and yet it was taken")
				}
				var fe *Error
				if !errors.As(err, &fe) || !strings.Contains(err.Error(), "chunk "+sum) {
					t.Fatalf("error does not name the chunk: %v", err)
				}
				for _, s := range tc.srcs {
					if !strings.Contains(err.Error(), s.name+": ") {
						t.Errorf("error does not name %s: %v", s.name, err)
					}
				}
				for _, want := range tc.errHas {
					if !errors.Is(err, want) {
						t.Errorf("error does not wrap %v: %v", want, err)
					}
				}
			} else if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.srcs {
				if got := int(s.calls.Load()); got != tc.calls[i] {
					t.Errorf("%s asked %d times, want %d", s.name, got, tc.calls[i])
				}
			}
			from := f.BytesFrom()
			for i := range from {
				want := int64(0)
				if i == tc.from {
					want = 1000
				}
				if from[i] != want {
					t.Errorf("bytes from source %d: %d, want %d", i, from[i], want)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(heard) != fmt.Sprint(tc.complaint) && !(len(heard) == 0 && len(tc.complaint) == 0) {
				t.Errorf("complaints about sources %v, want %v", heard, tc.complaint)
			}
		})
	}
}

// TestADeadSourceIsPassedOverThenProbed: two failures in a row and a
// source is not asked for DownFor; then one request probes it (beside the
// next source, so the chunk does not wait for it), and once it answers
// again it is preferred again.
func TestADeadSourceIsPassedOverThenProbed(t *testing.T) {
	sums, chunks := testChunks(9)
	var healed atomic.Bool
	dead := &fake{name: "dead", answer: func(_ int, s string) ([]byte, error) {
		if healed.Load() {
			return chunks[s], nil
		}
		return nil, errors.New("connection refused")
	}}
	good := &fake{name: "good", chunks: chunks}
	o := fast()
	f := New([]store.Source{dead, good}, o)
	get := func(k int) {
		t.Helper()
		if err := f.Chunk(t.Context(), sums[k], 1000, nil, check(sums[k])); err != nil {
			t.Fatal(err)
		}
	}
	for k := range 5 {
		get(k)
	}
	if n := dead.calls.Load(); n != 2 {
		t.Fatalf("the dead source was asked %d times for 5 chunks, want 2 (then passed over)", n)
	}
	time.Sleep(o.DownFor + 50*time.Millisecond)
	get(5)
	if n := dead.calls.Load(); n != 3 {
		t.Fatalf("after DownFor the dead source was asked %d times, want one probe (3 in all)", n)
	}
	get(6)
	if n := dead.calls.Load(); n != 3 {
		t.Fatalf("a failed probe did not pass it over again: %d requests", n)
	}
	healed.Store(true)
	time.Sleep(o.DownFor + 50*time.Millisecond)
	get(7) // the probe, beside the good source: either may win
	before := f.BytesFrom()[0]
	get(8)
	if from := f.BytesFrom(); from[0] != before+1000 {
		t.Fatalf("the healed source is not preferred again: bytes %v", from)
	}
}

// notYetServer answers 425 Too Early to everything, as a peer that is
// still deploying and never gets further.
func notYetServer(t *testing.T, calls *atomic.Int32) *store.HTTP {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusTooEarly)
	}))
	t.Cleanup(srv.Close)
	h, err := store.OpenHTTP(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestAPeerThatIsNeverReadyDoesNotStall: a peer first in the list that
// answers 425 forever costs a two-chunk fetch no wait at all with the
// default options: the master is asked at once (it used to be 2 minutes
// per chunk).
func TestAPeerThatIsNeverReadyDoesNotStall(t *testing.T) {
	sums, chunks := testChunks(2)
	var calls atomic.Int32
	peer := notYetServer(t, &calls)
	master := &fake{name: "master", chunks: chunks}
	f := New([]store.Source{peer, master}, Options{})
	begin := time.Now()
	var wg sync.WaitGroup
	for _, s := range sums {
		wg.Go(func() {
			if err := f.Chunk(t.Context(), s, 1000, nil, check(s)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	el := time.Since(begin)
	t.Logf("2 chunks from [425-forever peer, master]: %v, %d requests to the peer", el, calls.Load())
	if el > 2*time.Second {
		t.Errorf("took %v", el)
	}
	if from := f.BytesFrom(); from[1] != 2000 {
		t.Errorf("bytes %v", from)
	}
}

// TestAStalledLoneSourceIsGivenUp: with nowhere else to ask, a source
// that says "not yet" is waited for until it gave nothing new for
// StallAfter, then the fetch fails saying so; the next chunk does not wait
// again.
func TestAStalledLoneSourceIsGivenUp(t *testing.T) {
	sums, _ := testChunks(2)
	var calls atomic.Int32
	o := fast()
	var stalls atomic.Int32
	o.OnError = func(_ int, _ string, err error) {
		if errors.Is(err, ErrStalled) {
			stalls.Add(1)
		}
	}
	f := New([]store.Source{notYetServer(t, &calls)}, o)
	begin := time.Now()
	err := f.Chunk(t.Context(), sums[0], 1000, nil, check(sums[0]))
	el := time.Since(begin)
	if !errors.Is(err, ErrStalled) || !errors.Is(err, store.ErrNotYet) {
		t.Fatalf("got %v, want ErrStalled and ErrNotYet", err)
	}
	if el < o.StallAfter || el > o.StallAfter+time.Second {
		t.Errorf("gave up after %v; StallAfter is %v", el, o.StallAfter)
	}
	if calls.Load() < 3 {
		t.Errorf("only %d polls in %v", calls.Load(), el)
	}
	begin = time.Now()
	if err := f.Chunk(t.Context(), sums[1], 1000, nil, check(sums[1])); !errors.Is(err, ErrStalled) {
		t.Fatalf("second chunk: %v", err)
	}
	if el := time.Since(begin); el > 200*time.Millisecond {
		t.Errorf("the second chunk waited %v for a stalled source", el)
	}
	if n := stalls.Load(); n != 1 {
		t.Errorf("the stall was reported %d times, want once", n)
	}
}

// TestAPeerThatBecomesReadyIsUsed: "not yet" is polled; a peer that then
// has the chunk gives it. While the peer makes progress (it gave a chunk
// lately) the master is not asked at all: the tree spares it.
func TestAPeerThatBecomesReadyIsUsed(t *testing.T) {
	sums, chunks := testChunks(2)
	peer := &fake{name: "peer", answer: func(n int, s string) ([]byte, error) {
		if s == sums[1] && n < 5 {
			return nil, fmt.Errorf("chunk %s: %w", s, store.ErrNotYet)
		}
		return chunks[s], nil
	}}
	master := &fake{name: "master", chunks: chunks}
	o := fast()
	o.HedgeAfter = 5 * time.Second // the peer's first chunk keeps it "making progress"
	f := New([]store.Source{peer, master}, o)
	for _, s := range sums {
		if err := f.Chunk(t.Context(), s, 1000, nil, check(s)); err != nil {
			t.Fatal(err)
		}
	}
	if n := peer.calls.Load(); n != 5 {
		t.Errorf("peer asked %d times, want 5 (1 + 3 not yet + 1)", n)
	}
	if n := master.calls.Load(); n != 0 {
		t.Errorf("master asked %d times while the peer made progress", n)
	}
	if from := f.BytesFrom(); from[0] != 2000 {
		t.Errorf("bytes %v", from)
	}

	// The same peer alone, before it ever gave anything: polled until ready.
	lone := &fake{name: "lone", answer: peer.answer}
	f = New([]store.Source{lone}, fast())
	if err := f.Chunk(t.Context(), sums[1], 1000, nil, check(sums[1])); err != nil {
		t.Fatal(err)
	}
	if n := lone.calls.Load(); n != 5 {
		t.Errorf("lone peer asked %d times, want 5", n)
	}
}

// TestCancelStopsTheWait: a cancelled context ends a wait for a source
// that says "not yet", with the context's error.
func TestCancelStopsTheWait(t *testing.T) {
	sums, _ := testChunks(1)
	var calls atomic.Int32
	o := fast()
	o.StallAfter = time.Hour
	f := New([]store.Source{notYetServer(t, &calls)}, o)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := f.Chunk(ctx, sums[0], 1000, nil, check(sums[0])); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}

// TestOverHTTP: the same choices with real HTTP stores on loopback: a
// server that fails, one that lacks the chunk, one that sends other
// bytes, then a good one; every chunk comes from the good one.
func TestOverHTTP(t *testing.T) {
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4<<16)
	rand.Read(data)
	c, _, err := image.StoreContent(t.Context(), st, bytes.NewReader(data), int64(len(data)), 1<<16, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := store.CreateDir(t.TempDir())
	forged := make([]byte, 1<<16)
	rand.Read(forged)
	otherSum := image.HashBytes(forged)
	other.PutChunk(otherSum, forged)
	serve := func(h http.Handler) store.Source {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		s, err := store.OpenHTTP(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	srcs := []store.Source{
		serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) })),
		serve(http.NotFoundHandler()),
		serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeFile(w, r, filepath.Join(other.Root, "chunks", otherSum[:2], otherSum))
		})),
		serve(http.FileServer(http.Dir(st.Root))),
	}
	dec, err := image.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	f := New(srcs, fast())
	for i, sum := range c.Chunks {
		buf := make([]byte, 1<<16)
		err := f.Chunk(t.Context(), sum, 1<<16, nil, func(b []byte) error {
			got, err := dec.Decode(b, sum, 1<<16, buf)
			if err == nil && !bytes.Equal(got, data[i<<16:(i+1)<<16]) {
				t.Fatalf("chunk %d: other bytes", i)
			}
			return err
		})
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if from := f.BytesFrom(); from[3] != int64(len(data)) {
		t.Fatalf("bytes %v, want all from the good server", from)
	}
}

// TestResolveSkipsUntrustedSources: under trust, a source with an
// unsigned manifest of the same name:version is passed over.
func TestResolveSkipsUntrustedSources(t *testing.T) {
	dir := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := image.LoadSigner(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(sign bool) *store.Dir {
		st, err := store.CreateDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 100<<10)
		rand.Read(data)
		c, _, err := image.StoreContent(t.Context(), st, bytes.NewReader(data), int64(len(data)), 64<<10, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := &image.Manifest{Format: image.FormatVersion, Name: "demo", Version: "1", Created: time.Unix(1700000000, 0).UTC(), ChunkSize: 64 << 10,
			Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}}}
		if _, err := st.PutManifest(m); err != nil {
			t.Fatal(err)
		}
		if sign {
			raw, _ := st.Manifest(t.Context(), "demo", "1")
			sig, err := signer.Sign(raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.PutSignature("demo", "1", sig); err != nil {
				t.Fatal(err)
			}
		}
		return st
	}
	plain, signed := mk(false), mk(true)
	trust, _ := image.ParseTrust([]string{pub})
	r, err := New([]store.Source{plain, signed}, fast()).Resolve(t.Context(), "demo", "1", trust)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := signed.Manifest(t.Context(), "demo", "1")
	if r.ID != image.ID(want) {
		t.Fatal("the unsigned source's manifest was taken under trust")
	}
	if _, err := New([]store.Source{plain}, fast()).Resolve(t.Context(), "demo", "1", trust); !errors.Is(err, image.ErrUntrusted) {
		t.Fatalf("only an unsigned source: %v", err)
	}
	if _, err := New([]store.Source{plain}, fast()).Resolve(t.Context(), "demo", "", nil); err != nil {
		t.Fatalf("newest version without trust: %v", err)
	}
}

// TestASourceThatDoesNotAnswerIsHedged: a first source that never
// answers (a host that drops packets) holds a chunk back only HedgeAfter:
// then the next source is asked too, and the hung request is cancelled.
func TestASourceThatDoesNotAnswerIsHedged(t *testing.T) {
	sums, chunks := testChunks(1)
	var cancelled atomic.Bool
	f := New([]store.Source{hangingSource{&fake{name: "hung"}, &cancelled}, &fake{name: "good", chunks: chunks}}, fast())
	begin := time.Now()
	if err := f.Chunk(t.Context(), sums[0], 1000, nil, check(sums[0])); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(begin); el < fast().HedgeAfter || el > fast().HedgeAfter+time.Second {
		t.Errorf("took %v; HedgeAfter is %v", el, fast().HedgeAfter)
	}
	if !cancelled.Load() {
		t.Error("the hung request was not cancelled and waited for")
	}
}

// hangingSource answers a chunk only when its request is cancelled.
type hangingSource struct {
	*fake
	cancelled *atomic.Bool
}

func (h hangingSource) Chunk(ctx context.Context, sum string) ([]byte, error) {
	<-ctx.Done()
	h.cancelled.Store(true)
	return nil, ctx.Err()
}

// A source that gave chunks and then went quiet (no reset: its requests
// hang, as when a server is powered off) is hedged once it has given
// nothing for QuietAfter, not waited for until the request's own
// timeout (before: forever here, 60 s over HTTP); and it is then passed
// over, so the items after that one do not wait QuietAfter on it again.
func TestASourceThatGoesQuietIsHedged(t *testing.T) {
	sums, chunks := testChunks(4)
	var gone atomic.Bool
	var cancelled atomic.Bool
	quiet := quietSource{fake: &fake{name: "first", chunks: chunks}, gone: &gone, cancelled: &cancelled}
	second := &fake{name: "second", chunks: chunks}
	o := fast()
	o.QuietAfter = 300 * time.Millisecond
	o.DownFor = time.Minute
	var quietErrs atomic.Int32
	o.OnError = func(_ int, _ string, err error) {
		if errors.Is(err, ErrQuiet) {
			quietErrs.Add(1)
		}
	}
	f := New([]store.Source{quiet, second}, o)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := f.Chunk(ctx, sums[0], 1000, nil, check(sums[0])); err != nil {
		t.Fatal(err)
	}
	if second.calls.Load() != 0 {
		t.Fatalf("the second source was asked while the first answered")
	}
	gone.Store(true)
	// Still within QuietAfter of the first's last item: it is waited for
	// alone, then hedged.
	begin := time.Now()
	if err := f.Chunk(ctx, sums[1], 1000, nil, check(sums[1])); err != nil {
		t.Fatal(err)
	}
	el := time.Since(begin)
	if el < o.QuietAfter/2 || el > o.QuietAfter+time.Second {
		t.Errorf("the quiet source was hedged after %v; QuietAfter is %v", el, o.QuietAfter)
	}
	if second.calls.Load() != 1 || !cancelled.Load() || quietErrs.Load() != 1 {
		t.Errorf("second source asked %d times, hung request cancelled: %v, quiet reported %d times", second.calls.Load(), cancelled.Load(), quietErrs.Load())
	}
	// Passed over now: the next items come from the second at once.
	begin = time.Now()
	for _, sum := range sums[2:] {
		if err := f.Chunk(ctx, sum, 1000, nil, check(sum)); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(begin); el > o.QuietAfter {
		t.Errorf("two more items took %v: the quiet source was waited for again", el)
	}
}

// quietSource answers like its fake until gone, then hangs until its
// request is cancelled.
type quietSource struct {
	*fake
	gone, cancelled *atomic.Bool
}

func (q quietSource) Chunk(ctx context.Context, sum string) ([]byte, error) {
	if !q.gone.Load() {
		return q.fake.Chunk(ctx, sum)
	}
	<-ctx.Done()
	q.cancelled.Store(true)
	return nil, ctx.Err()
}

// A source whose items each take longer than QuietAfter (a large chunk
// over a slow link) is not quiet: its quiet time is twice its last item's,
// so the next source is not asked for every item.
func TestASlowSourceIsNotTakenForQuiet(t *testing.T) {
	sums, chunks := testChunks(3)
	const each = 400 * time.Millisecond
	slow := &fake{name: "slow", answer: func(_ int, sum string) ([]byte, error) {
		time.Sleep(each)
		return chunks[sum], nil
	}}
	other := &fake{name: "other", chunks: chunks}
	o := fast()
	o.QuietAfter = each / 2
	o.HedgeAfter = time.Minute // the first item: a source that never gave
	f := New([]store.Source{slow, other}, o)
	for _, sum := range sums {
		if err := f.Chunk(t.Context(), sum, 1000, nil, check(sum)); err != nil {
			t.Fatal(err)
		}
	}
	if n := other.calls.Load(); n != 0 {
		t.Errorf("the other source was asked %d times while the slow one gave every item", n)
	}
}
