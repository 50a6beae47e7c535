package chunkcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// bytesOf is a load giving n bytes of key's first letter.
func bytesOf(key string, n int) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) { return bytes.Repeat([]byte(key[:1]), n), nil }
}

func kept(c *Cache[string], keys string) string {
	var out []string
	for _, k := range strings.Fields(keys) {
		if c.Has(k) {
			out = append(out, k)
		}
	}
	return strings.Join(out, " ")
}

// TestBoundAndEvictionOrder proves what stays after a sequence of gets:
// the least recently used unpinned entries go first once the bytes pass
// the bound, an entry over the entry bound is handed out but not kept,
// pinned entries stay whatever the bound, and KeepAll keeps everything.
func TestBoundAndEvictionOrder(t *testing.T) {
	// Steps: "get K N" loads or uses K (N bytes), "pin K N" acquires it,
	// "release K" lets the last pin of K go.
	tests := []struct {
		name  string
		o     Options
		steps []string
		kept  string // of the keys a..f, those kept at the end
		bytes int64
	}{
		{"under the bound all stay", Options{MaxBytes: 12}, []string{"get a 4", "get b 4", "get c 4"}, "a b c", 12},
		{"oldest goes first", Options{MaxBytes: 12}, []string{"get a 4", "get b 4", "get c 4", "get d 4"}, "b c d", 12},
		{"a use makes an entry recent", Options{MaxBytes: 12}, []string{"get a 4", "get b 4", "get c 4", "get a 4", "get d 4"}, "a c d", 12},
		{"a large entry drops several", Options{MaxBytes: 12}, []string{"get a 4", "get b 4", "get c 4", "get d 10"}, "d", 10},
		{"over the entry bound: not kept", Options{MaxBytes: 12, MaxEntry: 3}, []string{"get a 2", "get b 4", "get c 3"}, "a c", 5},
		{"over the bound itself: not kept, nothing dropped", Options{MaxBytes: 12}, []string{"get a 4", "get b 13"}, "a", 4},
		{"pinned: never dropped, not counted", Options{MaxBytes: 8}, []string{"pin a 4", "get b 4", "get c 4", "get d 4", "get e 4"}, "a d e", 12},
		{"a kept entry pinned later: not dropped", Options{MaxBytes: 8}, []string{"get a 4", "pin a 4", "get b 4", "get c 4", "get d 4"}, "a c d", 12},
		{"released: counted again, most recent", Options{MaxBytes: 8}, []string{"pin a 4", "get b 4", "get c 4", "release a", "get d 4"}, "a d", 8},
		{"two pins: held until both go", Options{MaxBytes: 4}, []string{"pin a 4", "pin a 4", "release a", "get b 4", "get c 4"}, "a c", 8},
		{"pinned over the entry bound: shared, then dropped", Options{MaxBytes: 8, MaxEntry: 4}, []string{"get b 4", "pin a 6", "pin a 6", "release a", "release a"}, "b", 4},
		{"KeepAll: nothing dropped, no bound", Options{MaxBytes: 4, KeepAll: true}, []string{"get a 4", "get b 4", "get c 9", "get d 4"}, "a b c d", 21},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New[string](tc.o)
			pins := map[string][]func(){}
			for _, s := range tc.steps {
				var op, k string
				var n int
				fmt.Sscan(s, &op, &k, &n)
				switch op {
				case "get":
					b, _, err := c.Get(context.Background(), k, bytesOf(k, n))
					if err != nil || len(b) != n {
						t.Fatalf("%s: %d bytes, %v", s, len(b), err)
					}
				case "pin":
					b, release, err := c.Acquire(context.Background(), k, bytesOf(k, n))
					if err != nil || len(b) != n {
						t.Fatalf("%s: %d bytes, %v", s, len(b), err)
					}
					pins[k] = append(pins[k], release)
				case "release":
					pins[k][0]()
					pins[k] = pins[k][1:]
				}
			}
			if got := kept(c, "a b c d e f"); got != tc.kept {
				t.Errorf("kept %q, want %q", got, tc.kept)
			}
			if got := c.Bytes(); got != tc.bytes {
				t.Errorf("Bytes() = %d, want %d", got, tc.bytes)
			}
		})
	}
}

// TestHitSaysTheBytesWereKept proves Get's hit: false for the caller that
// loaded, true for a later one, false again after the entry was dropped.
func TestHitSaysTheBytesWereKept(t *testing.T) {
	c := New[string](Options{MaxBytes: 4})
	var hits []bool
	for _, k := range []string{"a", "a", "b", "a"} {
		_, hit, err := c.Get(context.Background(), k, bytesOf(k, 4))
		if err != nil {
			t.Fatal(err)
		}
		hits = append(hits, hit)
	}
	if want := []bool{false, true, false, false}; !slices.Equal(hits, want) {
		t.Errorf("hits %v, want %v", hits, want)
	}
}

// TestSingleFlight proves that concurrent gets of one key, plain and
// pinning, run one load and all get its bytes, and that a failed load
// is given to every waiter and not kept: the next get loads again.
func TestSingleFlight(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		err     error
		loads   int32 // after the concurrent gets and one more get
		wantErr error
	}{
		{"a load is shared and kept", nil, 1, nil},
		{"a failed load is shared, not kept", boom, 2, boom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New[string](Options{MaxBytes: 1 << 20})
			var loads atomic.Int32
			started, unblock := make(chan struct{}), make(chan struct{})
			load := func(context.Context) ([]byte, error) {
				if loads.Add(1) == 1 {
					close(started)
					<-unblock
				}
				if tc.err != nil {
					return nil, tc.err
				}
				return []byte("chunk"), nil
			}
			const n = 32
			var wg sync.WaitGroup
			errs := make([]error, n)
			got := make([][]byte, n)
			// The first get loads; the others come while it runs.
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[0], _, errs[0] = c.Get(context.Background(), "k", load)
			}()
			<-started
			for i := 1; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if i%2 == 0 {
						var release func()
						got[i], release, errs[i] = c.Acquire(context.Background(), "k", load)
						if release != nil {
							release()
						}
						return
					}
					got[i], _, errs[i] = c.Get(context.Background(), "k", load)
				}()
			}
			// Every other get is in the wait: one that came after the
			// load ended would prove nothing.
			awaitWaiters(t, c, "k", n-1)
			close(unblock)
			wg.Wait()
			for i := range n {
				if !errors.Is(errs[i], tc.wantErr) {
					t.Fatalf("get %d: %v, want %v", i, errs[i], tc.wantErr)
				}
				if tc.wantErr == nil && string(got[i]) != "chunk" {
					t.Fatalf("get %d: %q", i, got[i])
				}
			}
			if loads.Load() != 1 {
				t.Fatalf("%d loads for %d concurrent gets, want 1", loads.Load(), n)
			}
			_, hit, _ := c.Get(context.Background(), "k", load)
			if loads.Load() != tc.loads || hit != (tc.err == nil) {
				t.Errorf("after them: %d loads (hit %v), want %d", loads.Load(), hit, tc.loads)
			}
		})
	}
}

// TestCancelWhileWaiting proves a waiter's context ends its wait, not the
// load it waits for: the loader goes on, its result is kept, and a pin
// the waiter took is let go (the entry can be dropped again).
func TestCancelWhileWaiting(t *testing.T) {
	for _, pin := range []bool{false, true} {
		t.Run(fmt.Sprintf("pin=%v", pin), func(t *testing.T) {
			c := New[string](Options{MaxBytes: 4})
			started, unblock := make(chan struct{}), make(chan struct{})
			done := make(chan error)
			go func() {
				_, _, err := c.Get(context.Background(), "a", func(ctx context.Context) ([]byte, error) {
					close(started)
					<-unblock
					return []byte("aaaa"), ctx.Err()
				})
				done <- err
			}()
			<-started
			ctx, cancel := context.WithCancel(context.Background())
			waited := make(chan error)
			go func() {
				var err error
				if pin {
					_, _, err = c.Acquire(ctx, "a", bytesOf("x", 4))
				} else {
					_, _, err = c.Get(ctx, "a", bytesOf("x", 4))
				}
				waited <- err
			}()
			time.Sleep(20 * time.Millisecond)
			cancel()
			select {
			case err := <-waited:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("the waiter got %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the waiter still waits after its context ended")
			}
			close(unblock)
			if err := <-done; err != nil {
				t.Fatalf("the loader: %v", err)
			}
			b, hit, err := c.Get(context.Background(), "a", bytesOf("x", 4))
			if err != nil || !hit || string(b) != "aaaa" {
				t.Fatalf("after the load: %q hit %v %v, want the loader's kept bytes", b, hit, err)
			}
			// Not pinned any more: a newer entry pushes it out.
			if _, _, err := c.Get(context.Background(), "b", bytesOf("b", 4)); err != nil {
				t.Fatal(err)
			}
			if got := kept(c, "a b"); got != "b" {
				t.Errorf("kept %q, want %q: the cancelled waiter's pin stayed", got, "b")
			}
		})
	}
}

// TestReleaseTwiceIsOnce proves a release called again does not unpin
// another holder's pin.
func TestReleaseTwiceIsOnce(t *testing.T) {
	c := New[string](Options{MaxBytes: 4})
	_, r1, _ := c.Acquire(context.Background(), "a", bytesOf("a", 4))
	_, r2, _ := c.Acquire(context.Background(), "a", bytesOf("a", 4))
	r1()
	r1()
	c.Get(context.Background(), "b", bytesOf("b", 4))
	c.Get(context.Background(), "c", bytesOf("c", 4))
	if !c.Has("a") {
		t.Fatal("a, still pinned by its second holder, was dropped")
	}
	r2()
	c.Get(context.Background(), "d", bytesOf("d", 4))
	if c.Has("a") {
		t.Fatal("a, released by both, was not dropped past the bound")
	}
}

// TestAPanickingLoadReleasesItsWaiters proves a load that panics does not
// leave its key loading for ever: the panic goes on in the loader, the
// gets waiting for it fail with ErrLoadPanicked, and the next get loads
// again.
func TestAPanickingLoadReleasesItsWaiters(t *testing.T) {
	c := New[string](Options{MaxBytes: 1 << 20})
	started, unblock := make(chan struct{}), make(chan struct{})
	panicked := make(chan any)
	go func() {
		defer func() { panicked <- recover() }()
		c.Get(context.Background(), "k", func(context.Context) ([]byte, error) {
			close(started)
			<-unblock
			panic("load broke")
		})
	}()
	<-started
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			_, _, err := c.Get(context.Background(), "k", func(context.Context) ([]byte, error) { return []byte("again"), nil })
			errs <- err
		}()
	}
	awaitWaiters(t, c, "k", n)
	close(unblock)
	if p := <-panicked; p != "load broke" {
		t.Fatalf("the loader's panic: %v, want it to go on", p)
	}
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrLoadPanicked) {
				t.Errorf("a waiter got %v, want ErrLoadPanicked", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a get still waits for the load that panicked")
		}
	}
	if b, hit, err := c.Get(context.Background(), "k", func(context.Context) ([]byte, error) { return []byte("again"), nil }); err != nil || hit || string(b) != "again" {
		t.Errorf("the next get: %q (hit %v), %v; want a new load", b, hit, err)
	}
}
