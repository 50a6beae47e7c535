package nbd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The ioctls of linux/nbd.h: _IO(0xab, n).
const (
	ioSetSock    = 0xab00
	ioSetBlksize = 0xab01
	ioSetSize    = 0xab02
	ioDoIt       = 0xab03
	ioClearSock  = 0xab04
	ioSetTimeout = 0xab09
	ioSetFlags   = 0xab0a

	flagHasFlags = 1 << 0
	flagReadOnly = 1 << 1
	flagFlush    = 1 << 2
)

// ErrNoDevice says the kernel has no free NBD device (no nbd module, or
// all in use).
var ErrNoDevice = errors.New("no free NBD device")

// FreeDevice is the first /dev/nbdN that no server holds: the kernel
// shows a pid file in sysfs while one does.
func FreeDevice() (string, error) {
	ents, err := filepath.Glob("/sys/block/nbd*")
	if err != nil || len(ents) == 0 {
		return "", fmt.Errorf("%w: /sys/block lists no nbd devices (is the nbd module loaded?)", ErrNoDevice)
	}
	best := -1
	for _, e := range ents {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(e), "nbd"))
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(e, "pid")); err == nil {
			continue
		}
		if best < 0 || n < best {
			best = n
		}
	}
	if best < 0 {
		return "", fmt.Errorf("%w: every /dev/nbdN is in use", ErrNoDevice)
	}
	return fmt.Sprintf("/dev/nbd%d", best), nil
}

// Device is a kernel NBD device served by this process.
type Device struct {
	Path string
	// Done is closed when the kernel let go of the device (NBD_DO_IT
	// returned: disconnected, or the server's socket closed); Err then
	// says why.
	Done <-chan struct{}
	Err  error
}

// Attach connects dev to the kernel's NBD device path as a read-only disk
// of size bytes, serves it until ctx ends, and returns once the kernel
// shows the device at its full size (ready to mount). The kernel queues
// requests on one end of a socketpair; Serve answers them on the other.
// No request timeout is set: the kernel then waits for a slow chunk
// (printing "possible stuck request" now and then) instead of failing
// the read; the Backend decides how long to wait and says so.
func Attach(ctx context.Context, path string, dev Backend, size int64, o Options) (*Device, error) {
	if size <= 0 || size%512 != 0 {
		return nil, fmt.Errorf("nbd: a device of %d bytes (want a positive multiple of 512)", size)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	// The server's end is non-blocking so the runtime polls it and
	// closing it ends a read in progress; the kernel's end stays blocking.
	if err := unix.SetNonblock(fds[1], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	kernelEnd := os.NewFile(uintptr(fds[0]), "nbd-kernel")
	serverEnd := os.NewFile(uintptr(fds[1]), "nbd-server")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		kernelEnd.Close()
		serverEnd.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	blk := uint64(4096)
	if size%4096 != 0 {
		blk = 512
	}
	fd := int(f.Fd())
	for _, c := range []struct {
		name string
		req  uint
		arg  uint64
	}{
		{"NBD_CLEAR_SOCK", ioClearSock, 0},
		{"NBD_SET_BLKSIZE", ioSetBlksize, blk},
		{"NBD_SET_SIZE", ioSetSize, uint64(size)},
		{"NBD_SET_TIMEOUT", ioSetTimeout, 0},
		{"NBD_SET_FLAGS", ioSetFlags, flagHasFlags | flagReadOnly | flagFlush},
		{"NBD_SET_SOCK", ioSetSock, uint64(kernelEnd.Fd())},
	} {
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(c.req), uintptr(c.arg)); errno != 0 {
			f.Close()
			kernelEnd.Close()
			serverEnd.Close()
			return nil, fmt.Errorf("%s on %s: %w", c.name, path, errno)
		}
	}
	done := make(chan struct{})
	d := &Device{Path: path, Done: done}
	go func() {
		err := Serve(ctx, serverEnd, dev, size, o)
		if err != nil && ctx.Err() == nil && o.OnError != nil {
			o.OnError(-1, 0, err)
		}
	}()
	go func() {
		// NBD_DO_IT blocks for the device's whole life in this thread.
		runtime.LockOSThread()
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioDoIt, 0)
		if errno != 0 {
			d.Err = fmt.Errorf("NBD_DO_IT on %s: %w", path, errno)
		}
		kernelEnd.Close()
		serverEnd.Close()
		f.Close()
		close(done)
	}()
	sysSize := filepath.Join("/sys/block", filepath.Base(path), "size")
	want := strconv.FormatInt(size/512, 10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(sysSize)
		if strings.TrimSpace(string(b)) == want {
			return d, nil
		}
		select {
		case <-done:
			return nil, fmt.Errorf("%s stopped before it was ready: %w", path, d.Err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not come up at %s sectors within 10 s (sysfs says %q)", path, want, strings.TrimSpace(string(b)))
		}
	}
}
