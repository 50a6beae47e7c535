package netboot

import (
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults for the zero HTTPLimits.
const (
	// DefaultReadHeaderTimeout is how long a new connection has to send
	// its request headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a keep-alive connection that sends no
	// next request; idle connections once used up every descriptor.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultWriteTimeout is how long one write to a client may take. It
	// moves on with each write, so a large file to a slow but moving
	// client is fine, and a client that stops reading is dropped.
	DefaultWriteTimeout = 60 * time.Second
	// DefaultMaxConns bounds open HTTP connections: a descriptor and a
	// goroutine each. Further clients wait in the listen backlog until one
	// closes, which the timeouts above make sure happens.
	DefaultMaxConns = 2048
)

// HTTPLimits bound what clients of the HTTP server can hold.
type HTTPLimits struct {
	ReadHeaderTimeout time.Duration // 0: DefaultReadHeaderTimeout
	IdleTimeout       time.Duration // 0: DefaultIdleTimeout
	WriteTimeout      time.Duration // per write; 0: DefaultWriteTimeout
	MaxConns          int           // 0: DefaultMaxConns
}

func orDefault[T time.Duration | int](v, d T) T {
	if v > 0 {
		return v
	}
	return d
}

// NewHTTPServer builds the http.Server every imprint HTTP listener uses,
// with l's timeouts. Serve it on LimitListener(ln, l) for the connection
// cap and the per-write deadline.
func NewHTTPServer(h http.Handler, l HTTPLimits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: orDefault(l.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		IdleTimeout:       orDefault(l.IdleTimeout, DefaultIdleTimeout),
		// No WriteTimeout: it is one deadline for a whole response,
		// which a 40 MB initrd to a slow client can outlive; limitConn
		// moves the deadline on with each write instead.
	}
}

// LimitListener caps ln at l.MaxConns open connections and gives each
// write on them l.WriteTimeout. The deadline is set on the connection
// rather than through http.ResponseController in a handler wrapper, so it
// also covers the sendfile path http.ServeContent takes and every handler
// alike.
func LimitListener(ln net.Listener, l HTTPLimits) net.Listener {
	n := orDefault(l.MaxConns, DefaultMaxConns)
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), write: orDefault(l.WriteTimeout, DefaultWriteTimeout), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem   chan struct{}
	write time.Duration
	once  sync.Once
	done  chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, write: l.write, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	write   time.Duration
	once    sync.Once
	release func()
}

// writeStep is how much one deadline covers: a handler may hand over a
// whole file in one Write, and the client must be held to moving, not to
// taking all of it within one timeout.
const writeStep = 64 << 10

func (c *limitConn) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.write)); err != nil {
			return total, err
		}
		n, err := c.Conn.Write(p[:min(len(p), writeStep)])
		total += n
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	return total, nil
}

// ReadFrom keeps the kernel's sendfile for file responses (net/http uses
// the connection's ReadFrom when it has one), writeStep per deadline.
func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{c}, r)
	}
	var total int64
	for {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.write)); err != nil {
			return total, err
		}
		n, err := rf.ReadFrom(&io.LimitedReader{R: r, N: writeStep})
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
