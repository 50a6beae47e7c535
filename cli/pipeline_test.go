package cli

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the deploy's goroutines and the
// test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestPipelinedTree: three deploys started at the same moment, each taking
// only from the one before it (store -> A -> B -> C) while that one is
// still being written. B and C must wait for chunks their parent does not
// have yet (425) instead of failing, and all three end identical.
func TestPipelinedTree(t *testing.T) {
	b := treeImage(t)
	dir := t.TempDir()
	pa, pb := freeAddr(t), freeAddr(t)
	type proc struct {
		code   int
		stderr *syncBuffer
		stdout *syncBuffer
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func(args ...string) *proc {
		ctx, cancel := context.WithCancel(context.Background())
		p := &proc{stderr: &syncBuffer{}, stdout: &syncBuffer{}, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(p.done)
			p.code = Run(ctx, args, Stdio{In: strings.NewReader(""), Out: p.stdout, Err: p.stderr})
		}()
		return p
	}
	disk := func(n string) string { return filepath.Join(dir, n+".img") }
	common := []string{"--image", b.name, "--size", "100M", "--yes"}
	listening := func(p *proc) {
		t.Helper()
		for range 200 {
			if strings.Contains(p.stderr.String(), "serving the disk at") {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no server came up: %s", p.stderr)
	}
	// Each starts as soon as its parent listens, long before the parent
	// has written anything: the children ask for the manifest and chunks
	// of a disk that is not even partitioned yet.
	a := start(append([]string{"deploy", "--from", b.store, "--disk", disk("a"), "--serve", pa}, common...)...)
	listening(a)
	bp := start(append([]string{"deploy", "--from", "http://" + pa + "/", "--disk", disk("b"), "--serve", pb}, common...)...)
	listening(bp)
	c := start(append([]string{"deploy", "--from", "http://" + pb + "/", "--disk", disk("c")}, common...)...)

	select {
	case <-c.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("C did not finish.\nA: %s\nB: %s\nC: %s", a.stderr, bp.stderr, c.stderr)
	}
	if c.code != 0 {
		t.Fatalf("C: exit %d\n%s\nB: %s\nA: %s", c.code, c.stderr, bp.stderr, a.stderr)
	}
	for _, p := range []*proc{a, bp} {
		p.cancel()
		<-p.done
		if p.code != 0 || !strings.Contains(p.stderr.String(), "still serving it") {
			t.Fatalf("a serving deploy: exit %d\n%s", p.code, p.stderr)
		}
	}
	for _, d := range []string{"a", "b", "c"} {
		if code, out, errs := run(t, "verify", "--disk", disk(d)); code != 0 {
			t.Fatalf("verify %s: %s%s", d, out, errs)
		}
		if rootSum(t, b, disk(d)) != b.m.Partitions[0].Content.SHA256 {
			t.Fatalf("%s differs from the master", d)
		}
	}
}
