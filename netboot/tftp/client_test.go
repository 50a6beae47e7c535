package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// testClient is a small RRQ client that can send what curl cannot
// (windowsize, rollover, any bytes as a file name) and misbehave on purpose
// (lose or repeat ACKs, lose DATA) to exercise the server's recovery.
type testClient struct {
	Mode    string   // default octet
	Options []Option // sent as is
	Op      Opcode   // default OpRRQ

	// DropAck, if set, is asked before each ACK is sent (blk is the
	// 64-bit block count, n how many ACKs for it were already asked);
	// true loses it.
	DropAck func(blk uint64, n int) bool
	// DupAcks sends every ACK this many extra times.
	DupAcks int
	// DropData, if set, is asked for each DATA packet received; true
	// discards it as if the network lost it.
	DropData func(blk uint64, n int) bool
	// Timeout is how long the client waits before re-sending its last
	// ACK (default 2 s); Deadline bounds the whole transfer (default 30 s).
	Timeout  time.Duration
	Deadline time.Duration
	// Local is the address the client sends from (default 127.0.0.1).
	Local net.IP
}

// result is what a transfer produced.
type result struct {
	Data        []byte
	OACK        map[string]string // nil if the server sent no OACK
	DataPackets int               // DATA packets received, duplicates included
	Duplicates  int               // DATA packets for blocks already held
	Gaps        int               // DATA packets past a missing block
	Peer        *net.UDPAddr      // the server's transfer TID
}

// tftpError is an ERROR packet from the server.
type tftpError struct {
	Code ErrorCode
	Msg  string
}

func (e *tftpError) Error() string { return fmt.Sprintf("tftp error %d: %s", e.Code, e.Msg) }

// errorCode returns the TFTP code of err, or -1.
func errorCode(err error) int {
	var te *tftpError
	if errors.As(err, &te) {
		return int(te.Code)
	}
	return -1
}

func (c *testClient) Get(ctx context.Context, server *net.UDPAddr, name string) (*result, error) {
	req := Request{Op: c.Op, Filename: name, Mode: c.Mode, Options: c.Options}
	if req.Op == 0 {
		req.Op = OpRRQ
	}
	if req.Mode == "" {
		req.Mode = ModeOctet
	}
	pkt, err := req.AppendBinary(nil)
	if err != nil {
		return nil, err
	}
	return c.getRaw(ctx, server, pkt)
}

func (c *testClient) getRaw(ctx context.Context, server *net.UDPAddr, reqPkt []byte) (*result, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	total := c.Deadline
	if total == 0 {
		total = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	local := c.Local
	if local == nil {
		local = net.IPv4(127, 0, 0, 1)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: local})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if _, err := conn.WriteToUDP(reqPkt, server); err != nil {
		return nil, err
	}
	res := &result{}
	blksize, window := 512, 1
	wantOACK := len(c.Options) > 0
	rolloverTo := uint64(0)
	var (
		got      uint64 // blocks received in order
		inWindow int
		gapAcked bool
		lastAck  []byte
		ackAsked = map[uint64]int{}
		dataSeen = map[uint64]int{}
	)
	sendAck := func(blk uint64, wire uint16) error {
		b := binary.BigEndian.AppendUint16(nil, uint16(OpACK))
		b = binary.BigEndian.AppendUint16(b, wire)
		lastAck = b
		if c.DropAck != nil {
			n := ackAsked[blk]
			ackAsked[blk]++
			if c.DropAck(blk, n) {
				return nil
			}
		}
		for range 1 + c.DupAcks {
			if _, err := conn.WriteToUDP(b, res.Peer); err != nil {
				return err
			}
		}
		return nil
	}
	wireOf := func(n uint64) uint16 {
		if rolloverTo == 0 || n < 65536 {
			return uint16(n)
		}
		return uint16((n-65536)%65535 + 1)
	}
	buf := make([]byte, 65536+4)
	for {
		if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return res, err
		}
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil {
				return res, fmt.Errorf("client gave up: %w", ctx.Err())
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && res.Peer != nil && lastAck != nil {
				// Our ACK (or the data) was lost: say again where we are.
				if _, err := conn.WriteToUDP(lastAck, res.Peer); err != nil {
					return res, err
				}
				continue
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return res, err
		}
		if res.Peer == nil {
			res.Peer = from
			if from.Port == server.Port {
				return res, fmt.Errorf("reply came from the server port %d, not a new TID", from.Port)
			}
		} else if !from.IP.Equal(res.Peer.IP) || from.Port != res.Peer.Port {
			continue // another TID: not ours
		}
		p := buf[:n]
		if n < 2 {
			return res, fmt.Errorf("runt packet %x", p)
		}
		switch Opcode(binary.BigEndian.Uint16(p)) {
		case OpERROR:
			if n < 4 {
				return res, fmt.Errorf("short ERROR %x", p)
			}
			msg, _, _ := cutNUL(p[4:])
			return res, &tftpError{Code: ErrorCode(binary.BigEndian.Uint16(p[2:])), Msg: msg}
		case OpOACK:
			if !wantOACK {
				return res, errors.New("OACK to a request without options")
			}
			if res.OACK == nil {
				res.OACK = map[string]string{}
				fields := bytes.Split(p[2:], []byte{0})
				for i := 0; i+1 < len(fields); i += 2 {
					res.OACK[string(fields[i])] = string(fields[i+1])
				}
				if v, ok := res.OACK["blksize"]; ok {
					blksize, _ = strconv.Atoi(v)
				}
				if v, ok := res.OACK["windowsize"]; ok {
					window, _ = strconv.Atoi(v)
				}
				if v, ok := res.OACK["rollover"]; ok && v == "1" {
					rolloverTo = 1
				}
			}
			if got == 0 {
				if err := sendAck(0, 0); err != nil {
					return res, err
				}
			}
		case OpDATA:
			if n < 4 {
				return res, fmt.Errorf("short DATA %x", p)
			}
			res.DataPackets++
			wire := binary.BigEndian.Uint16(p[2:])
			next := got + 1
			if wire != wireOf(next) {
				if isOld(wire, got, wireOf) {
					// Our ACK was lost and the server went back. Say
					// where we are once the resent window is over.
					res.Duplicates++
					if window == 1 || wire == wireOf(got) {
						if err := sendAck(got, wireOf(got)); err != nil {
							return res, err
						}
					}
					continue
				}
				// A gap: RFC 7440 says ACK the last block in order,
				// once, and wait for the server to go back.
				res.Gaps++
				inWindow = 0
				if !gapAcked {
					gapAcked = true
					if err := sendAck(got, wireOf(got)); err != nil {
						return res, err
					}
				}
				continue
			}
			if c.DropData != nil {
				dataSeen[next]++
				if c.DropData(next, dataSeen[next]-1) {
					continue
				}
			}
			if n-4 > blksize {
				return res, fmt.Errorf("block %d has %d bytes, blksize %d", next, n-4, blksize)
			}
			res.Data = append(res.Data, p[4:]...)
			got, gapAcked = next, false
			inWindow++
			final := n-4 < blksize
			if final || inWindow == window {
				inWindow = 0
				if err := sendAck(got, wire); err != nil {
					return res, err
				}
			}
			if final {
				return res, nil
			}
		default:
			return res, fmt.Errorf("unexpected packet %x", p)
		}
	}
}

// isOld tells whether wire names one of the last 64 blocks already received.
func isOld(wire uint16, got uint64, wireOf func(uint64) uint16) bool {
	for i := uint64(0); i < 64 && i <= got; i++ {
		if wireOf(got-i) == wire {
			return true
		}
	}
	return false
}
