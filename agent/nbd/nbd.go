// Package nbd serves a read-only block device to the Linux kernel's NBD
// driver: the transmission phase of the NBD protocol (the kernel does no
// handshake when the socket is handed to it with NBD_SET_SOCK), answered
// from a Backend. Serve is plain protocol over any stream, so it is tested
// with an in-process client; Attach (Linux) connects it to /dev/nbdN.
package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Backend gives the device's bytes. ReadAt fills all of p or fails; it may
// block (a chunk being fetched) and must return when ctx ends.
type Backend interface {
	ReadAt(ctx context.Context, p []byte, off int64) error
}

// Wire constants of the NBD protocol (doc/proto.md in the NBD project).
const (
	requestMagic = 0x25609513
	replyMagic   = 0x67446698

	cmdRead  = 0
	cmdWrite = 1
	cmdDisc  = 2
	cmdFlush = 3
	cmdTrim  = 4

	errPerm  = 1
	errIO    = 5
	errInval = 22

	requestLen = 28
	replyLen   = 16
)

// MaxRequest bounds one request's length: the kernel splits I/O far below
// it (max_sectors), so a larger one is a broken peer, not a big read.
const MaxRequest = 32 << 20

// ErrProtocol says the peer sent something that is not an NBD request.
var ErrProtocol = errors.New("nbd protocol error")

// Options tune Serve.
type Options struct {
	// Parallel is how many reads are answered at once [16]: a read that
	// waits for a chunk must not hold back reads of chunks already here.
	Parallel int
	// OnError hears about every read that failed (the kernel gets EIO).
	OnError func(off int64, n int, err error)
}

// Serve answers NBD requests from conn with dev's bytes (size bytes; the
// device is read-only) until the peer disconnects, conn fails or ctx
// ends. Replies may come out of order, as the protocol allows; each
// reply (header and data) is written whole.
func Serve(ctx context.Context, conn io.ReadWriteCloser, dev Backend, size int64, o Options) error {
	if o.Parallel <= 0 {
		o.Parallel = 16
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var wmu sync.Mutex
	reply := func(handle []byte, errno uint32, data []byte) error {
		var h [replyLen]byte
		binary.BigEndian.PutUint32(h[0:], replyMagic)
		binary.BigEndian.PutUint32(h[4:], errno)
		copy(h[8:], handle)
		wmu.Lock()
		defer wmu.Unlock()
		if _, err := conn.Write(h[:]); err != nil {
			return err
		}
		if len(data) > 0 {
			if _, err := conn.Write(data); err != nil {
				return err
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, o.Parallel)
	werr := make(chan error, 1)
	for {
		var req [requestLen]byte
		if _, err := io.ReadFull(conn, req[:]); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			select {
			case err := <-werr:
				return fmt.Errorf("nbd reply: %w", err)
			default:
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("nbd request: %w", err)
		}
		if m := binary.BigEndian.Uint32(req[0:]); m != requestMagic {
			return fmt.Errorf("%w: request magic %#x, want %#x", ErrProtocol, m, requestMagic)
		}
		typ := binary.BigEndian.Uint16(req[6:])
		handle := append([]byte(nil), req[8:16]...)
		off := int64(binary.BigEndian.Uint64(req[16:]))
		n := binary.BigEndian.Uint32(req[24:])
		var err error
		switch typ {
		case cmdRead:
			if n > MaxRequest || off < 0 || off+int64(n) > size {
				err = reply(handle, errInval, nil)
				break
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				buf := make([]byte, n)
				var rerr error
				if e := dev.ReadAt(ctx, buf, off); e != nil {
					if o.OnError != nil && ctx.Err() == nil {
						o.OnError(off, int(n), e)
					}
					rerr = reply(handle, errIO, nil)
				} else {
					rerr = reply(handle, 0, buf)
				}
				if rerr != nil {
					select {
					case werr <- rerr:
					default:
					}
					cancel()
				}
			}()
		case cmdWrite:
			// The payload follows the request: read it off the stream
			// before refusing, or the next request is misread.
			if n > MaxRequest {
				return fmt.Errorf("%w: a write of %d bytes", ErrProtocol, n)
			}
			if _, err := io.CopyN(io.Discard, conn, int64(n)); err != nil {
				return fmt.Errorf("nbd write payload: %w", err)
			}
			err = reply(handle, errPerm, nil)
		case cmdDisc:
			return nil
		case cmdFlush:
			err = reply(handle, 0, nil)
		case cmdTrim:
			err = reply(handle, errPerm, nil)
		default:
			err = reply(handle, errInval, nil)
		}
		if err != nil {
			return fmt.Errorf("nbd reply: %w", err)
		}
	}
}
