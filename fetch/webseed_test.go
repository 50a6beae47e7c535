package fetch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

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
