package tftp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestARequestFloodIsBounded sends 2000 read requests from one socket,
// over 50 file names, and never acknowledges: before the limits, every
// request got a transfer with its own socket that lived for all its
// retries. With the default limits the server holds at most
// DefaultMaxTransfersPerClient sockets for the flooder, and a client on
// another address still gets its file during the flood.
func TestARequestFloodIsBounded(t *testing.T) {
	data := randomBytes(200<<10, 31)
	var opened atomic.Int64
	var logMu sync.Mutex
	var logged int
	s := &Server{
		Handler: HandlerFunc(func(_ context.Context, name string, _ net.Addr) (io.ReadSeeker, error) {
			opened.Add(1)
			return bytes.NewReader(data), nil
		}),
		Logf: func(string, ...any) { logMu.Lock(); logged++; logMu.Unlock() },
		// Long enough that no flood transfer gives up during the test.
		Timeout: 2 * time.Second,
	}
	addr := startServer(t, s)
	before := openFDs(t)

	flood := rawConn(t)
	peak := 0
	for i := range 2000 {
		if _, err := flood.WriteToUDP(rrq(fmt.Sprintf("f%d", i%50)), addr); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(5 * time.Millisecond) // let the server catch up
			peak = max(peak, openFDs(t)-before)
		}
	}
	time.Sleep(100 * time.Millisecond)
	peak = max(peak, openFDs(t)-before)
	if bound := DefaultMaxTransfersPerClient + 4; peak > bound {
		t.Errorf("the flood opened %d file descriptors, want at most %d", peak, bound)
	}
	if n := opened.Load(); n > DefaultMaxTransfersPerClient {
		t.Errorf("the flood started %d transfers, want at most %d", n, DefaultMaxTransfersPerClient)
	}

	// 127.0.0.2 is loopback too, and another client address.
	res, err := (&testClient{Local: net.IPv4(127, 0, 0, 2), Deadline: 20 * time.Second}).Get(context.Background(), addr, "during-the-flood")
	if err != nil {
		t.Fatalf("a real client during the flood: %v", err)
	}
	sameBytes(t, "file fetched during the flood", res.Data, data)
	logMu.Lock()
	defer logMu.Unlock()
	if logged > 200 {
		t.Errorf("the flood wrote %d log lines; refusals should be summarised", logged)
	}
}

// TestDuplicateRequestsShareOneTransfer: a client that repeats its request
// (our answer was lost or slow) gets one transfer, not one per copy.
func TestDuplicateRequestsShareOneTransfer(t *testing.T) {
	var opened atomic.Int64
	s := &Server{Handler: HandlerFunc(func(_ context.Context, name string, _ net.Addr) (io.ReadSeeker, error) {
		opened.Add(1)
		return bytes.NewReader(randomBytes(5000, 1)), nil
	}), Timeout: time.Second}
	addr := startServer(t, s)
	c := rawConn(t)
	for range 20 {
		c.WriteToUDP(rrq("f"), addr)
	}
	time.Sleep(200 * time.Millisecond)
	if n := opened.Load(); n != 1 {
		t.Fatalf("20 copies of one request opened the file %d times, want 1", n)
	}
}

// TestATransferHasALifetime: a client that negotiates the longest timeout
// and goes quiet loses its transfer at MaxTransferTime, not after 6 x 255 s.
func TestATransferHasALifetime(t *testing.T) {
	done := make(chan string, 4)
	s := &Server{
		Handler: HandlerFunc(func(context.Context, string, net.Addr) (io.ReadSeeker, error) {
			return bytes.NewReader(randomBytes(5000, 2)), nil
		}),
		Logf: func(f string, a ...any) {
			if line := fmt.Sprintf(f, a...); bytes.Contains([]byte(line), []byte("the limit")) {
				done <- line
			}
		},
		Limits: Limits{MaxTransferTime: 300 * time.Millisecond},
	}
	addr := startServer(t, s)
	c := rawConn(t)
	c.WriteToUDP(rrq("f", "timeout", "255"), addr)
	select {
	case line := <-done:
		t.Log(line)
	case <-time.After(5 * time.Second):
		t.Fatal("the transfer outlived its 300 ms limit by 5 s")
	}
}
