package fetch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/store"
)

// seeder is a fake with a web seed whose answers a test scripts.
type seeder struct {
	*fake
	seed  func(n int) ([]byte, error)
	seeds atomic.Int32
}

func (s *seeder) WebSeed(ctx context.Context, name, version string, off, n int64) ([]byte, error) {
	return s.seed(int(s.seeds.Add(1)))
}

var errServer = errors.New("500 Internal Server Error")

func slice(f *Fetcher) error {
	return f.Slice(context.Background(), "img", "1", 0, 4, "pieces 0-0", func(b []byte) error {
		if string(b) != "data" {
			return fmt.Errorf("%q", b)
		}
		return nil
	})
}

// TestAFailingWebSeedIsTurnedOffAndKeepsItsSourceForChunks: a web seed
// that keeps failing is asked once a call, not Tries times; after
// WebSeedOffAfter calls in a row it is off (said once, ErrWebSeedOff);
// and its failures never pass its source over for chunks.
func TestAFailingWebSeedIsTurnedOffAndKeepsItsSourceForChunks(t *testing.T) {
	sums, chunks := testChunks(4)
	a := &seeder{fake: &fake{name: "a", chunks: chunks}, seed: func(int) ([]byte, error) { return nil, errServer }}
	b := &fake{name: "b", chunks: chunks}
	var mu sync.Mutex
	var said []string
	opt := fast()
	opt.OnError = func(i int, what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if errors.Is(err, ErrWebSeedOff) {
			said = append(said, fmt.Sprintf("%d %s: %v", i, what, err))
		}
	}
	f := New([]store.Source{a, b}, opt)
	for k := range 5 {
		err := slice(f)
		if err == nil || errors.Is(err, ErrNoWebSeed) {
			t.Fatalf("call %d: %v; want a failure, the web seed still there", k, err)
		}
		if want := min(k+1, 3); int(a.seeds.Load()) != want {
			t.Fatalf("call %d: %d range requests, want %d: one a call, none once off", k, a.seeds.Load(), want)
		}
		if k >= 3 && !errors.Is(err, ErrWebSeedOff) {
			t.Fatalf("call %d: %v; want ErrWebSeedOff", k, err)
		}
		// Chunks still come from a, the preferred source.
		if err := f.Chunk(context.Background(), sums[k%4], 1000, nil, check(sums[k%4])); err != nil {
			t.Fatal(err)
		}
	}
	if b.calls.Load() != 0 {
		t.Fatalf("b was asked for %d chunks: a's web seed passed a over", b.calls.Load())
	}
	if len(said) != 1 || said[0][0] != '0' {
		t.Fatalf("said %q; want a's web seed off, once", said)
	}
}

// TestSliceRemembersOnlyWhatWillNotChange: "not found" and "no range"
// remember a source as having no web seed, a 5xx does not; errors are
// reported under the source's own index; ErrNoWebSeed comes only when
// every source is remembered so.
func TestSliceRemembersOnlyWhatWillNotChange(t *testing.T) {
	_, chunks := testChunks(1)
	plain := &fake{name: "plain", chunks: chunks} // no WebSeeder
	var bErr atomic.Pointer[error]
	bErr.Store(&errServer)
	a := &seeder{fake: &fake{name: "a"}, seed: func(int) ([]byte, error) { return nil, fmt.Errorf("swarm/data: %w", store.ErrNotFound) }}
	b := &seeder{fake: &fake{name: "b"}, seed: func(int) ([]byte, error) { return nil, *bErr.Load() }}
	var mu sync.Mutex
	from := map[int]int{}
	opt := fast()
	opt.WebSeedOffAfter = 100
	opt.OnError = func(i int, _ string, _ error) { mu.Lock(); from[i]++; mu.Unlock() }
	f := New([]store.Source{plain, a, b}, opt)
	for k := range 3 {
		if err := slice(f); err == nil || errors.Is(err, ErrNoWebSeed) {
			t.Fatalf("call %d: %v; want a failure, b's web seed still there", k, err)
		}
	}
	if a.seeds.Load() != 1 || b.seeds.Load() != 3 {
		t.Fatalf("a asked %d times, b %d; want a once (not found), b every time (a 5xx)", a.seeds.Load(), b.seeds.Load())
	}
	mu.Lock()
	if from[0] != 0 || from[1] != 1 || from[2] != 3 {
		t.Fatalf("errors by source %v; want none from 0, 1 from 1, 3 from 2", from)
	}
	mu.Unlock()
	forbidden := fmt.Errorf("swarm/data: %w: 403 Forbidden", store.ErrNoRange)
	bErr.Store(&forbidden)
	if err := slice(f); !errors.Is(err, ErrNoWebSeed) {
		t.Fatalf("%v; want ErrNoWebSeed, every source remembered", err)
	}
	if err := slice(f); !errors.Is(err, ErrNoWebSeed) || a.seeds.Load() != 1 || b.seeds.Load() != 4 {
		t.Fatalf("%v, a asked %d times, b %d; want ErrNoWebSeed and no request", err, a.seeds.Load(), b.seeds.Load())
	}
}

// hangSeeder's web seed never answers: it waits for its request's end.
type hangSeeder struct {
	*fake
	n atomic.Int32
}

func (s *hangSeeder) WebSeed(ctx context.Context, name, version string, off, n int64) ([]byte, error) {
	s.n.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

// offSaid collects what OnError says of web seeds turned off, and any
// whole-chunk wording for them.
type offSaid struct {
	mu   sync.Mutex
	off  []int
	said []string
}

func (o *offSaid) hear(i int, what string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.said = append(o.said, fmt.Sprintf("%d %s: %v", i, what, err))
	if errors.Is(err, ErrWebSeedOff) {
		o.off = append(o.off, i)
	}
}

func (o *offSaid) check(t *testing.T, want []int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if fmt.Sprint(o.off) != fmt.Sprint(want) {
		t.Fatalf("web seeds said off: %v, want %v; said %q", o.off, want, o.said)
	}
	for _, s := range o.said {
		if strings.Contains(s, "passed over") || strings.Contains(s, "failures in a row") {
			t.Fatalf("a web seed said in whole-chunk words: %q", s)
		}
	}
}

// TestAPreferredWebSeedThatFailsWhileAnotherAnswersIsTurnedOff: a
// preferred seed that hangs (beaten by the next one's answer each time),
// answers 500, or sends bytes that do not check is turned off after
// WebSeedOffAfter calls, though every call got its bytes from the other
// seed; after that, calls do not wait HedgeAfter on it.
func TestAPreferredWebSeedThatFailsWhileAnotherAnswersIsTurnedOff(t *testing.T) {
	_, chunks := testChunks(1)
	for _, tc := range []struct {
		name string
		a    func() (store.Source, func() int32)
	}{
		{"hangs", func() (store.Source, func() int32) {
			a := &hangSeeder{fake: &fake{name: "a", chunks: chunks}}
			return a, a.n.Load
		}},
		{"500", func() (store.Source, func() int32) {
			a := &seeder{fake: &fake{name: "a", chunks: chunks}, seed: func(int) ([]byte, error) { return nil, errServer }}
			return a, a.seeds.Load
		}},
		{"bytes that do not check", func() (store.Source, func() int32) {
			a := &seeder{fake: &fake{name: "a", chunks: chunks}, seed: func(int) ([]byte, error) { return []byte("datx"), nil }}
			return a, a.seeds.Load
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, asked := tc.a()
			b := &seeder{fake: &fake{name: "b", chunks: chunks}, seed: func(int) ([]byte, error) { return []byte("data"), nil }}
			var o offSaid
			opt := fast()
			opt.WebSeedTimeout = 5 * opt.HedgeAfter
			opt.OnError = o.hear
			f := New([]store.Source{a, b}, opt)
			for k := range 6 {
				begin := time.Now()
				if err := slice(f); err != nil {
					t.Fatalf("call %d: %v; b answers", k, err)
				}
				if took := time.Since(begin); k >= 3 && took >= opt.HedgeAfter {
					t.Fatalf("call %d took %v: waited on a seed that should be off", k, took)
				}
			}
			if asked() != 3 || b.seeds.Load() != 6 {
				t.Fatalf("a asked %d times, b %d; want a 3 times (then off), b every time", asked(), b.seeds.Load())
			}
			o.check(t, []int{0})
		})
	}
}

// TestAWebSeedWhoseBytesNeverCheckIsTurnedOff: a refused answer is a
// failure of its seed: WebSeedOffAfter of them turn it off.
func TestAWebSeedWhoseBytesNeverCheckIsTurnedOff(t *testing.T) {
	_, chunks := testChunks(1)
	a := &seeder{fake: &fake{name: "a", chunks: chunks}, seed: func(int) ([]byte, error) { return []byte("datx"), nil }}
	var o offSaid
	opt := fast()
	opt.OnError = o.hear
	f := New([]store.Source{a}, opt)
	for k := range 6 {
		err := slice(f)
		if k >= 2 && !errors.Is(err, ErrWebSeedOff) {
			t.Fatalf("call %d: %v; a asked %d times; want ErrWebSeedOff", k, err, a.seeds.Load())
		}
	}
	if a.seeds.Load() != 3 {
		t.Fatalf("a asked %d times, want 3", a.seeds.Load())
	}
	o.check(t, []int{0})
}

// TestARangeIgnoredIsAFailureForNow: a 200 for a range (a caching proxy's
// first miss) is not "no web seed": the next call asks again.
func TestARangeIgnoredIsAFailureForNow(t *testing.T) {
	_, chunks := testChunks(1)
	a := &seeder{fake: &fake{name: "a", chunks: chunks}, seed: func(k int) ([]byte, error) {
		if k == 1 {
			return nil, fmt.Errorf("GET swarm/data/img/1: %w: the server sent the whole file (200)", store.ErrRangeIgnored)
		}
		return []byte("data"), nil
	}}
	f := New([]store.Source{a}, fast())
	if err := slice(f); err == nil || errors.Is(err, ErrNoWebSeed) || errors.Is(err, ErrWebSeedOff) {
		t.Fatalf("first call: %v; want a failure for now", err)
	}
	if err := slice(f); err != nil {
		t.Fatalf("second call: %v; want the bytes", err)
	}
}

// TestASliceIsBoundedByWebSeedTimeout: however many seeds hang, a call
// ends after WebSeedTimeout, not one timeout plus HedgeAfter a seed.
func TestASliceIsBoundedByWebSeedTimeout(t *testing.T) {
	_, chunks := testChunks(1)
	var srcs []store.Source
	for _, name := range []string{"a", "b", "c"} {
		srcs = append(srcs, &hangSeeder{fake: &fake{name: name, chunks: chunks}})
	}
	opt := fast()
	opt.HedgeAfter, opt.WebSeedTimeout = 200*time.Millisecond, 300*time.Millisecond
	f := New(srcs, opt)
	begin := time.Now()
	err := slice(f)
	if took := time.Since(begin); took >= opt.WebSeedTimeout+opt.HedgeAfter {
		t.Fatalf("took %v; want about WebSeedTimeout (%v)", took, opt.WebSeedTimeout)
	}
	if !errors.Is(err, ErrNoAnswer) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v; want ErrNoAnswer, not a deadline of the caller's", err)
	}
	for _, s := range srcs {
		if n := s.(*hangSeeder).n.Load(); n > 1 {
			t.Fatalf("%s asked %d times, want once at most", s.(*hangSeeder).name, n)
		}
	}
}
