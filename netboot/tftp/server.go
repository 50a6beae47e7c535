package tftp

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
)

// Defaults for the zero Server.
const (
	DefaultTimeout       = time.Second
	DefaultRetries       = 5
	DefaultMaxBlockSize  = 65464 // RFC 2348's maximum
	DefaultMaxWindowSize = 64

	// DefaultMaxTransfers bounds transfers running at once: each holds a
	// socket (a file descriptor) and its window in memory. A rack of PXE
	// ROMs booting together needs one each, for a few seconds.
	DefaultMaxTransfers = 256
	// DefaultMaxTransfersPerClient bounds one client address: a PXE ROM
	// fetches one file at a time; the rest is room for machines behind
	// one NAT address and for retries while an old transfer times out.
	DefaultMaxTransfersPerClient = 16
	// DefaultMaxTransferTime bounds one transfer's life. A 100 MiB file
	// at 512-byte lock-step over a 1 ms round trip takes under 4 minutes;
	// a client that negotiates a 255 s timeout and then goes quiet held
	// its transfer for 25 minutes without it.
	DefaultMaxTransferTime = 10 * time.Minute
)

// Server is a read-only TFTP server. The zero value is not usable: set
// Handler. Fields must not change while Serve runs.
type Server struct {
	// Handler opens the requested files. Required.
	Handler Handler

	// Logf, if set, receives one line per transfer and per refused or
	// malformed request. nil keeps the server silent.
	Logf func(format string, args ...any)

	// Timeout is how long to wait for an ACK before sending again when
	// the client does not negotiate one (0 = DefaultTimeout).
	Timeout time.Duration
	// Retries is how many times a packet is sent again, without progress,
	// before the transfer is abandoned (0 = DefaultRetries).
	Retries int
	// MaxBlockSize caps the blksize a client may negotiate (0 =
	// DefaultMaxBlockSize). The client knows its path MTU, so the default
	// grants what it asks; set 1468 for clients that ask for more than
	// their network can carry unfragmented and then choke on fragments.
	MaxBlockSize int
	// MaxWindowSize caps the windowsize a client may negotiate (0 =
	// DefaultMaxWindowSize).
	MaxWindowSize int

	// Limits bound what requests from the network can make the server
	// hold; see Limits. The zero value takes the defaults.
	Limits
}

// Limits bound the server's resources against request floods. Requests
// over a limit are dropped without an answer: a PXE ROM sends its request
// again after its timeout, while an ERROR would end its boot, and silence
// gives a spoofed flood nothing to reflect.
type Limits struct {
	// MaxTransfers is how many transfers may run at once (0 =
	// DefaultMaxTransfers).
	MaxTransfers int
	// MaxTransfersPerClient is how many may run for one client IP
	// address (0 = DefaultMaxTransfersPerClient).
	MaxTransfersPerClient int
	// MaxTransferTime ends a transfer that has run this long (0 =
	// DefaultMaxTransferTime).
	MaxTransferTime time.Duration
}

func (l Limits) maxTransfers() int {
	if l.MaxTransfers > 0 {
		return l.MaxTransfers
	}
	return DefaultMaxTransfers
}

func (l Limits) maxPerClient() int {
	if l.MaxTransfersPerClient > 0 {
		return l.MaxTransfersPerClient
	}
	return DefaultMaxTransfersPerClient
}

func (l Limits) maxTransferTime() time.Duration {
	if l.MaxTransferTime > 0 {
		return l.MaxTransferTime
	}
	return DefaultMaxTransferTime
}

// admission counts the running transfers of one Serve call. A request is
// a duplicate while a transfer for the same client address, port and file
// runs: the client sent it again because our first answer was slow or
// lost, and the running transfer answers it.
type admission struct {
	lim     Limits
	mu      sync.Mutex
	total   int
	perIP   map[netip.Addr]int
	running map[string]bool
	// Refusals are logged at most once a second, with a count, so that a
	// flood does not also flood the log.
	refused    int
	lastLogged time.Time
}

func transferKey(remote net.Addr, name string) string { return remote.String() + "\x00" + name }

func addrOf(remote net.Addr) netip.Addr {
	if u, ok := remote.(*net.UDPAddr); ok {
		a, _ := netip.AddrFromSlice(u.IP)
		return a.Unmap()
	}
	return netip.Addr{}
}

// admit reserves a slot for a transfer, or says why there is none.
func (a *admission) admit(remote net.Addr, name string) (release func(), why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key, ip := transferKey(remote, name), addrOf(remote)
	switch {
	case a.running[key]:
		return nil, "duplicate of a running transfer"
	case a.total >= a.lim.maxTransfers():
		return nil, fmt.Sprintf("%d transfers running (the limit)", a.total)
	case a.perIP[ip] >= a.lim.maxPerClient():
		return nil, fmt.Sprintf("%d transfers running for this client (the limit)", a.perIP[ip])
	}
	a.total++
	a.perIP[ip]++
	a.running[key] = true
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.total--
		if a.perIP[ip]--; a.perIP[ip] == 0 {
			delete(a.perIP, ip)
		}
		delete(a.running, key)
	}, ""
}

// refusal returns the log line for a refused request, or "" while
// refusals are being counted quietly.
func (a *admission) refusal(remote net.Addr, name, why string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refused++
	if time.Since(a.lastLogged) < time.Second {
		return ""
	}
	n := a.refused
	a.refused, a.lastLogged = 0, time.Now()
	return fmt.Sprintf("tftp: %v: %q dropped: %s (%d dropped since the last such line)", remote, name, why, n)
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

func (s *Server) retries() int {
	if s.Retries > 0 {
		return s.Retries
	}
	return DefaultRetries
}

func (s *Server) maxBlockSize() int {
	// 65464 keeps DATA packets inside one IPv4 or IPv6 UDP datagram;
	// nothing above it can be sent, whatever the field says.
	if s.MaxBlockSize >= 8 && s.MaxBlockSize < DefaultMaxBlockSize {
		return s.MaxBlockSize
	}
	return DefaultMaxBlockSize
}

func (s *Server) maxWindowSize() int {
	if s.MaxWindowSize > 0 && s.MaxWindowSize < 65536 {
		return s.MaxWindowSize
	}
	return DefaultMaxWindowSize
}

// ListenAndServe listens on the UDP address addr (":69" if empty) and
// serves until ctx is cancelled.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	if addr == "" {
		addr = ":69"
	}
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("tftp listen: %w", err)
	}
	return s.Serve(ctx, conn)
}

// Serve answers the requests that arrive on conn until ctx is cancelled,
// then closes conn, waits for the running transfers to stop and returns nil.
// It returns an error only when conn fails. Each transfer runs on its own
// UDP socket (a new TID, as RFC 1350 wants), so conn must be a UDP socket
// for transfers to work; replies to malformed requests go out on conn.
//
// When conn is bound to a wildcard address, each transfer socket is bound
// to the address the request was sent to (where the platform tells it), so
// that a multi-homed server answers from the address the firmware talks to.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	if s.Handler == nil {
		conn.Close()
		return errors.New("tftp: Server.Handler is nil")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()

	adm := &admission{lim: s.Limits, perIP: map[netip.Addr]int{}, running: map[string]bool{}}
	recv := newReceiver(conn)
	buf := make([]byte, 65536)
	for {
		n, remote, local, err := recv.read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			cancel()
			return fmt.Errorf("tftp serve: %w", err)
		}
		pkt := buf[:n]
		if n < 2 {
			s.logf("tftp: %v: %d-byte packet ignored", remote, n)
			continue
		}
		switch op := Opcode(binary.BigEndian.Uint16(pkt)); op {
		case OpRRQ, OpWRQ:
		default:
			// A stray DATA/ACK/ERROR on the listening port belongs
			// to no transfer. Answering an ERROR with an ERROR could
			// ping-pong with a peer, so stay quiet.
			s.logf("tftp: %v: %v on the server port ignored", remote, op)
			continue
		}
		req, err := ParseRequest(pkt)
		if err != nil {
			s.logf("tftp: %v: %v", remote, err)
			// Best effort: the client learns why instead of timing out.
			_, _ = conn.WriteTo(errorPacket(ErrCodeIllegalOperation, "malformed request"), remote)
			continue
		}
		release, why := adm.admit(remote, req.Filename)
		if release == nil {
			if line := adm.refusal(remote, req.Filename, why); line != "" {
				s.logf("%s", line)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer release()
			s.serveRequest(ctx, req, remote, local)
		}()
	}
}

// serveRequest runs one transfer on a fresh socket.
func (s *Server) serveRequest(ctx context.Context, req Request, remote net.Addr, local netip.Addr) {
	raddr, ok := remote.(*net.UDPAddr)
	if !ok {
		s.logf("tftp: %v: not a UDP peer, cannot open a transfer socket", remote)
		return
	}
	var laddr *net.UDPAddr
	if local.IsValid() {
		laddr = &net.UDPAddr{IP: local.AsSlice(), Zone: raddr.Zone}
	}
	// A connected socket makes the kernel drop packets from any other
	// TID, and turns an ICMP port-unreachable from a client that went away
	// into an error on the next read instead of a run of timeouts.
	conn, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		s.logf("tftp: %v: transfer socket: %v", remote, err)
		return
	}
	defer conn.Close()
	serverCtx := ctx
	ctx, cancel := context.WithTimeout(ctx, s.maxTransferTime())
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	start := time.Now()
	t := &transfer{s: s, conn: conn, remote: remote}
	defer func() {
		// A Handler (or its reader) that panics costs its own
		// transfer, not every other client's boot.
		if v := recover(); v != nil {
			t.sendError(ErrCodeNotDefined, "internal error")
			s.logf("tftp: %v: %v %q: panic: %v\n%s", remote, req.Op, req.Filename, v, debug.Stack())
		}
	}()
	n, err := t.run(ctx, req)
	if err != nil {
		switch {
		case serverCtx.Err() != nil:
			err = fmt.Errorf("%w (server stopping)", err)
		case ctx.Err() != nil:
			err = fmt.Errorf("%w (the transfer ran for %v, the limit)", err, s.maxTransferTime())
		}
		s.logf("tftp: %v: %v %q: %v", remote, req.Op, req.Filename, err)
		return
	}
	d := time.Since(start)
	s.logf("tftp: %v: sent %q, %d bytes in %v (blksize %d, windowsize %d)",
		remote, req.Filename, n, d.Round(time.Millisecond), t.blksize, t.window)
}

// transfer is the state of one read transfer.
type transfer struct {
	s       *Server
	conn    *net.UDPConn
	remote  net.Addr
	blksize int
	window  int
	timeout time.Duration
	rollTo  uint16 // block number after 65535: 0 (tftpd-hpa, iPXE) or 1
	rbuf    []byte
}

// Errors a transfer ends with; they are logged, never returned by Serve.
var (
	errTimeout     = errors.New("client stopped answering")
	errClientError = errors.New("client sent an error")
)

// run serves req and returns the number of file bytes sent.
func (t *transfer) run(ctx context.Context, req Request) (int64, error) {
	if req.Op == OpWRQ {
		t.sendError(ErrCodeAccessViolation, "read-only server")
		return 0, fmt.Errorf("write refused: %w", ErrAccess)
	}
	if req.Mode == ModeMail {
		t.sendError(ErrCodeIllegalOperation, "mail mode not supported")
		return 0, errors.New("mail mode refused")
	}
	src, err := t.s.Handler.Open(ctx, req.Filename, t.remote)
	if err != nil {
		code, msg := errorFor(err)
		t.sendError(code, msg)
		return 0, err
	}
	if c, ok := src.(io.Closer); ok {
		defer c.Close()
	}
	size, err := sizeOf(src)
	if err != nil {
		t.sendError(ErrCodeNotDefined, "read error")
		return 0, err
	}
	// Read ahead in large chunks: one read per 64 KiB instead of one per
	// block halves the system calls of a 512-byte lock-step transfer.
	var r io.Reader = bufio.NewReaderSize(src, 64<<10)
	if req.Mode == ModeNetASCII {
		// The converted size is unknown without reading the file
		// twice, and RFC 2349 lets a server leave tsize out.
		r = newNetASCIIReader(r)
		size = -1
	}

	t.blksize, t.window, t.timeout = 512, 1, t.s.timeout()
	// Clients send only ACKs and ERRORs; 1 KiB holds any error message
	// worth logging, and a longer datagram is just truncated.
	t.rbuf = make([]byte, 1024)
	oack := t.negotiate(req, size)
	if len(oack) > 0 {
		if err := t.sendOACK(ctx, oackPacket(oack)); err != nil {
			return 0, err
		}
	}
	return t.sendData(ctx, r)
}

// negotiate applies the options the server supports and returns those it
// accepted, in the client's order, with the values that apply.
func (t *transfer) negotiate(req Request, size int64) []Option {
	var acc []Option
	for _, o := range req.Options {
		v, err := strconv.Atoi(o.Value)
		if err != nil {
			// RFC 2347: options the server cannot use are left out
			// of the OACK, and the transfer goes on without them.
			continue
		}
		switch o.Name {
		case "blksize":
			if v < 8 {
				continue
			}
			v = min(v, t.s.maxBlockSize())
			t.blksize = v
		case "windowsize":
			if v < 1 || v > 65535 {
				continue
			}
			v = min(v, t.s.maxWindowSize())
			t.window = v
		case "timeout":
			if v < 1 || v > 255 {
				continue
			}
			t.timeout = time.Duration(v) * time.Second
		case "tsize":
			// An empty file's tsize is left out too: curl (7.88)
			// rejects "tsize 0" in an OACK and aborts, while the one
			// empty DATA block that follows tells every client the
			// same thing.
			if size <= 0 {
				continue
			}
			o.Value = strconv.FormatInt(size, 10)
			acc = append(acc, o)
			continue
		case "rollover":
			if v != 0 && v != 1 {
				continue
			}
			t.rollTo = uint16(v)
		default:
			continue
		}
		acc = append(acc, Option{Name: o.Name, Value: strconv.Itoa(v)})
	}
	return acc
}

// sendOACK sends the OACK until the client acknowledges it with ACK 0.
func (t *transfer) sendOACK(ctx context.Context, pkt []byte) error {
	for tries := 0; ; tries++ {
		if tries > t.s.retries() {
			t.sendError(ErrCodeNotDefined, "timeout")
			return fmt.Errorf("waiting for ACK of OACK: %w", errTimeout)
		}
		if _, err := t.conn.Write(pkt); err != nil {
			return fmt.Errorf("send OACK: %w", err)
		}
		deadline := time.Now().Add(t.timeout)
		for {
			op, blk, err := t.readPacket(ctx, deadline)
			if err != nil {
				if errors.Is(err, errReadTimeout) {
					break
				}
				return err
			}
			if op == OpACK && blk == 0 {
				return nil
			}
		}
	}
}

// sendData sends r as DATA blocks of t.blksize, t.window blocks at a time.
//
// Block numbers are tracked as 64-bit counts and put on the wire modulo
// 65536 (after 65535 comes t.rollTo), so files of any size work.
//
// The last t.window blocks stay in memory until acknowledged: a lost block
// is sent again from there without re-reading (which a netascii stream or
// a generated file could not do).
func (t *transfer) sendData(ctx context.Context, r io.Reader) (int64, error) {
	w := uint64(t.window)
	ring := make([][]byte, w)
	for i := range ring {
		ring[i] = make([]byte, 4+t.blksize)
	}
	var (
		acked   uint64 // highest block the client has acknowledged
		read    uint64 // highest block read into ring
		last    uint64 // number of the final (short) block once read, else 0
		total   int64
		retries int
	)
	for {
		for read < acked+w && last == 0 {
			blk := read + 1
			b := ring[blk%w][:4+t.blksize]
			n, err := io.ReadFull(r, b[4:])
			switch {
			case err == io.EOF || err == io.ErrUnexpectedEOF:
				last = blk
			case err != nil:
				t.sendError(ErrCodeNotDefined, "read error")
				return total, fmt.Errorf("read block %d: %w", blk, err)
			}
			binary.BigEndian.PutUint16(b[0:], uint16(OpDATA))
			binary.BigEndian.PutUint16(b[2:], t.wireBlock(blk))
			ring[blk%w] = b[:4+n]
			total += int64(n)
			read = blk
		}
		for blk := acked + 1; blk <= read; blk++ {
			if _, err := t.conn.Write(ring[blk%w]); err != nil {
				return total, fmt.Errorf("send block %d: %w", blk, err)
			}
		}
		deadline := time.Now().Add(t.timeout)
	wait:
		for {
			op, ack, err := t.readPacket(ctx, deadline)
			if errors.Is(err, errReadTimeout) {
				retries++
				if retries > t.s.retries() {
					t.sendError(ErrCodeNotDefined, "timeout")
					return total, fmt.Errorf("at block %d: %w", acked+1, errTimeout)
				}
				break wait
			}
			if err != nil {
				return total, err
			}
			if op != OpACK {
				continue
			}
			// The client acknowledges "everything up to ack". Find
			// which block in flight carries that wire number; there is
			// at most one, as a window is far shorter than 65535.
			delta, ok := t.ackDelta(ack, acked, read)
			if !ok {
				continue // stale, or an ACK for a block never sent
			}
			if delta == 0 {
				// A duplicate ACK is never answered (the Sorcerer's
				// Apprentice bug: answering each copy doubles the
				// traffic at every block). With windowsize > 1 it may
				// also be a client saying it lost the window's first
				// block, which then costs one timeout: there is no
				// telling the two apart, and a stall beats a storm.
				continue
			}
			acked += delta
			retries = 0
			if last != 0 && acked == last {
				return total, nil
			}
			break wait
		}
	}
}

// wireBlock maps a block count to the 16-bit block number on the wire.
func (t *transfer) wireBlock(n uint64) uint16 {
	if t.rollTo == 0 || n < 65536 {
		return uint16(n)
	}
	// Rolling over to 1 skips block 0, so wire numbers cycle every
	// 65535 blocks after the first 65536.
	return uint16((n-65536)%65535 + 1)
}

// ackDelta returns how many blocks past acked the wire block number ack
// acknowledges, looking only at blocks acked..read.
func (t *transfer) ackDelta(ack uint16, acked, read uint64) (uint64, bool) {
	for blk := acked; blk <= read; blk++ {
		if t.wireBlock(blk) == ack {
			return blk - acked, true
		}
	}
	return 0, false
}

var errReadTimeout = errors.New("read timeout")

// readPacket waits until deadline for a packet from the client and returns
// its opcode and block number. An ERROR from the client ends the transfer.
func (t *transfer) readPacket(ctx context.Context, deadline time.Time) (Opcode, uint16, error) {
	for {
		n, err := t.recv(deadline)
		if err != nil {
			if ctx.Err() != nil {
				return 0, 0, fmt.Errorf("transfer cancelled: %w", ctx.Err())
			}
			return 0, 0, err
		}
		if n < 4 {
			continue
		}
		op := Opcode(binary.BigEndian.Uint16(t.rbuf))
		v := binary.BigEndian.Uint16(t.rbuf[2:])
		if op == OpERROR {
			msg, _, _ := cutNUL(t.rbuf[4:n])
			return op, v, fmt.Errorf("%w: code %d %q", errClientError, v, msg)
		}
		return op, v, nil
	}
}

// recv reads one datagram into t.rbuf, waiting until deadline.
func (t *transfer) recv(deadline time.Time) (int, error) {
	if err := t.conn.SetReadDeadline(deadline); err != nil {
		return 0, fmt.Errorf("set deadline: %w", err)
	}
	n, err := t.conn.Read(t.rbuf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, errReadTimeout
		}
		return 0, fmt.Errorf("receive: %w", err)
	}
	return n, nil
}

func (t *transfer) sendError(code ErrorCode, msg string) {
	// Best effort: if this fails the client times out, which is what it
	// would do anyway.
	_, _ = t.conn.Write(errorPacket(code, msg))
}

// errorFor picks the ERROR code and message for a Handler error. Only the
// sentinel meanings reach the wire; details stay in the server's log.
func errorFor(err error) (ErrorCode, string) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ErrCodeFileNotFound, "file not found"
	case errors.Is(err, fs.ErrPermission):
		return ErrCodeAccessViolation, "access violation"
	}
	return ErrCodeNotDefined, "cannot open file"
}

// sizeOf returns the size of rs and rewinds it to the start.
func sizeOf(rs io.ReadSeeker) (int64, error) {
	size, err := rs.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("find size: %w", err)
	}
	if _, err := rs.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("rewind: %w", err)
	}
	return size, nil
}
