package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// memDev is a Backend over a byte slice; reads at failAt fail.
type memDev struct {
	b      []byte
	failAt int64
	delay  map[int64]time.Duration
}

func (m *memDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	if d := m.delay[off]; d > 0 {
		time.Sleep(d)
	}
	if m.failAt >= 0 && off == m.failAt {
		return fmt.Errorf("no bytes at %d", off)
	}
	copy(p, m.b[off:])
	return nil
}

// client is the kernel's side of the socketpair, in the test.
type client struct {
	t    *testing.T
	conn *os.File
}

func socketpair(t *testing.T) (kernel, server *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	// As Attach does: the server's end is non-blocking, so the runtime
	// polls it and Close ends a read in progress.
	if err := unix.SetNonblock(fds[1], true); err != nil {
		t.Fatal(err)
	}
	k, s := os.NewFile(uintptr(fds[0]), "k"), os.NewFile(uintptr(fds[1]), "s")
	t.Cleanup(func() { k.Close(); s.Close() })
	return k, s
}

func (c *client) send(typ uint16, handle uint64, off int64, n uint32, payload []byte) {
	c.t.Helper()
	var r [requestLen]byte
	binary.BigEndian.PutUint32(r[0:], requestMagic)
	binary.BigEndian.PutUint16(r[6:], typ)
	binary.BigEndian.PutUint64(r[8:], handle)
	binary.BigEndian.PutUint64(r[16:], uint64(off))
	binary.BigEndian.PutUint32(r[24:], n)
	if _, err := c.conn.Write(append(r[:], payload...)); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one reply; want maps a handle to the data length its reply
// carries when it succeeds (the protocol does not say: the client must
// know).
func (c *client) recv(want map[uint64]int) (handle uint64, errno uint32, data []byte) {
	c.t.Helper()
	var h [replyLen]byte
	if _, err := io.ReadFull(c.conn, h[:]); err != nil {
		c.t.Fatal(err)
	}
	if m := binary.BigEndian.Uint32(h[0:]); m != replyMagic {
		c.t.Fatalf("reply magic %#x", m)
	}
	errno = binary.BigEndian.Uint32(h[4:])
	handle = binary.BigEndian.Uint64(h[8:])
	if errno == 0 {
		data = make([]byte, want[handle])
		if _, err := io.ReadFull(c.conn, data); err != nil {
			c.t.Fatal(err)
		}
	}
	return handle, errno, data
}

func serve(t *testing.T, dev Backend, size int64) (*client, <-chan error) {
	k, s := socketpair(t)
	done := make(chan error, 1)
	go func() { done <- Serve(t.Context(), s, dev, size, Options{}) }()
	return &client{t: t, conn: k}, done
}

func TestServeAnswersEachRequestKind(t *testing.T) {
	b := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	c, done := serve(t, &memDev{b: b, failAt: 8192}, int64(len(b)))
	for _, tc := range []struct {
		name    string
		typ     uint16
		off     int64
		n       uint32
		payload []byte
		errno   uint32
		data    []byte
	}{
		{"read", cmdRead, 100, 5000, nil, 0, b[100:5100]},
		{"read to the end", cmdRead, int64(len(b)) - 512, 512, nil, 0, b[len(b)-512:]},
		{"read past the end", cmdRead, int64(len(b)) - 512, 1024, nil, errInval, nil},
		{"read the backend fails", cmdRead, 8192, 512, nil, errIO, nil},
		{"write is refused and its payload skipped", cmdWrite, 0, 4, []byte("oops"), errPerm, nil},
		{"read after a write is still in step", cmdRead, 0, 16, nil, 0, b[:16]},
		{"flush", cmdFlush, 0, 0, nil, 0, nil},
		{"trim", cmdTrim, 0, 4096, nil, errPerm, nil},
		{"unknown command", 42, 0, 0, nil, errInval, nil},
	} {
		c.send(tc.typ, 7, tc.off, tc.n, tc.payload)
		h, errno, data := c.recv(map[uint64]int{7: int(tc.n)})
		if h != 7 || errno != tc.errno || (errno == 0 && !bytes.Equal(data, tc.data)) {
			t.Errorf("%s: handle %d errno %d (%d bytes), want errno %d", tc.name, h, errno, len(data), tc.errno)
		}
	}
	c.send(cmdDisc, 8, 0, 0, nil)
	if err := <-done; err != nil {
		t.Fatalf("after a disconnect request Serve says %v", err)
	}
}

func TestASlowReadDoesNotHoldBackOthers(t *testing.T) {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i / 4096)
	}
	dev := &memDev{b: b, failAt: -1, delay: map[int64]time.Duration{0: 300 * time.Millisecond}}
	c, _ := serve(t, dev, int64(len(b)))
	want := map[uint64]int{}
	for h := uint64(0); h < 8; h++ {
		c.send(cmdRead, h, int64(h)*65536, 4096, nil)
		want[h] = 4096
	}
	var order []uint64
	for range want {
		h, errno, data := c.recv(want)
		if errno != 0 || !bytes.Equal(data, b[int64(h)*65536:int64(h)*65536+4096]) {
			t.Fatalf("handle %d: errno %d or wrong bytes", h, errno)
		}
		order = append(order, h)
	}
	if order[len(order)-1] != 0 {
		t.Errorf("replies came in order %v: the slow read (handle 0) held the others back", order)
	}
}

func TestServeRefusesGarbage(t *testing.T) {
	c, done := serve(t, &memDev{b: make([]byte, 4096), failAt: -1}, 4096)
	if _, err := c.conn.Write(bytes.Repeat([]byte{0xff}, requestLen)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrProtocol) {
		t.Fatalf("Serve after garbage: %v, want ErrProtocol", err)
	}
}

func TestServeEndsWithItsContext(t *testing.T) {
	_, s := socketpair(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, s, &memDev{b: make([]byte, 4096), failAt: -1}, 4096, Options{}) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not end with its context")
	}
}

// Parallel readers through one connection each get their own bytes.
func TestManyReadsInFlight(t *testing.T) {
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = byte(i * 7)
	}
	c, _ := serve(t, &memDev{b: b, failAt: -1}, int64(len(b)))
	want := map[uint64]int{}
	for h := uint64(0); h < 64; h++ {
		want[h] = 1000
		c.send(cmdRead, h, int64(h)*4000, 1000, nil)
	}
	for range 64 {
		h, errno, data := c.recv(want)
		if errno != 0 || !bytes.Equal(data, b[h*4000:h*4000+1000]) {
			t.Fatalf("handle %d: wrong answer", h)
		}
	}
}
