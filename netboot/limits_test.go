package netboot

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// serveLimited runs h behind NewHTTPServer and LimitListener on loopback.
func serveLimited(t *testing.T, h http.Handler, l HTTPLimits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(h, l)
	go srv.Serve(LimitListener(ln, l))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return err == nil // EOF: the server closed it; a timeout is an error
}

func TestIdleHTTPConnectionsAreClosed(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	addr := serveLimited(t, ok, HTTPLimits{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond})

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if !closedWithin(silent, 3*time.Second) {
		t.Error("a connection that never sent a request is still open after 3 s")
	}

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !closedWithin(idle, 3*time.Second) {
		t.Error("a keep-alive connection idle after its request is still open after 3 s")
	}
}

func TestAClientThatStopsReadingIsDropped(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 64<<20)
	done := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, err := w.Write(big)
		done <- err
	})
	addr := serveLimited(t, h, HTTPLimits{WriteTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	// Read nothing: the socket buffers fill and the server's write blocks.
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("64 MiB written to a client that reads nothing")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write to a client that stopped reading still blocks after 5 s")
	}
}

func TestASlowButMovingClientGetsALargeResponse(t *testing.T) {
	body := bytes.Repeat([]byte("y"), 8<<20)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body) })
	// The deadline is per write: one pause of this client (10-20 ms,
	// more when a loaded CI host deschedules it) must stay far below it,
	// and the whole response (~2.6 s) well above it.
	addr := serveLimited(t, h, HTTPLimits{WriteTimeout: time.Second})
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// 8 MiB in 64 KiB reads with a pause: well over the per-write
	// deadline in total, never stalled for one.
	buf, got := make([]byte, 64<<10), 0
	start := time.Now()
	for {
		n, err := resp.Body.Read(buf)
		got += n
		if err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got != len(body) {
		t.Fatalf("got %d of %d bytes in %v", got, len(body), time.Since(start))
	}
	if time.Since(start) < time.Second {
		t.Logf("the response took only %v; the test proves less than it should", time.Since(start))
	}
}

func TestConnectionsAreCapped(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	addr := serveLimited(t, ok, HTTPLimits{MaxConns: 3, ReadHeaderTimeout: 400 * time.Millisecond})
	var hogs []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hogs = append(hogs, c)
	}
	time.Sleep(50 * time.Millisecond)
	c, err := net.Dial("tcp", addr) // the kernel's backlog takes it
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a fourth connection was served while three were open (cap 3)")
	}
	// The silent three time out on their headers; the fourth is served.
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the fourth connection after the others closed: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if strings.TrimSpace(string(b)) != "ok" {
		t.Fatalf("body %q", b)
	}
	_ = hogs
}

// TestFilesGoThroughTheLimitedConnection: http.ServeFile hands the file to
// the connection's ReadFrom (sendfile), which limitConn wraps in 256 KiB
// steps; the bytes must arrive whole.
func TestFilesGoThroughTheLimitedConnection(t *testing.T) {
	p := t.TempDir() + "/f"
	data := bytes.Repeat([]byte("0123456789abcdef"), (5<<20+7)/16)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := serveLimited(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, p) }), HTTPLimits{})
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("got %d of %d bytes: %v", len(got), len(data), err)
	}
}
