package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// maxPacket is larger than any DHCP message: a client may announce a
// large maximum message size, and a truncated read would parse as garbage.
const maxPacket = 65536

// Serve opens the listeners up front (port 67; in Proxy mode also 4011),
// runs one goroutine per listener plus the lease file writer, and returns
// nil once ctx is cancelled and everything has stopped and the lease file
// is written. A listener that fails ends Serve with that error.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("dhcp: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.serving = false
		s.mu.Unlock()
	}()

	ports := []int{portDHCP}
	if s.mode == Proxy {
		ports = append(ports, portPXE)
	}
	conns := make([]*net.UDPConn, 0, len(ports))
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for _, p := range ports {
		// Port 4011 requests are unicast to ServerIP. Binding to it makes
		// the answers come from that address even when it is not the
		// interface's primary one (a PXE client expects the boot server
		// it asked to answer).
		bind := netip.IPv4Unspecified()
		if p == portPXE {
			bind = s.serverIP
		}
		c, err := listen(ctx, s.cfg.Interface, bind, p)
		if err != nil {
			closeAll()
			return fmt.Errorf("dhcp: listening on %q port %d: %w", s.cfg.Interface, p, err)
		}
		conns = append(conns, c)
	}
	s.logf("dhcp: %v server on %q (%v), ports %v", s.mode, s.cfg.Interface, s.serverIP, ports)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(conns))
	for i, c := range conns {
		wg.Go(func() { errc <- s.serveConn(ctx, c, ports[i]) })
	}
	wg.Go(func() { s.writeLeases(ctx) })

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	closeAll() // unblocks the reads
	wg.Wait()
	if ferr := s.Flush(); ferr != nil && err == nil {
		err = ferr
	}
	return err
}

func (s *Server) serveConn(ctx context.Context, conn *net.UDPConn, port int) error {
	buf := make([]byte, maxPacket)
	for {
		n, peer, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dhcp: reading port %d: %w", port, err)
		}
		s.serveOne(conn, buf[:n], peer, port)
	}
}

// serveOne answers one packet. Nothing a client sends may stop the
// server: parse errors are logged and dropped, and a panic (a bug here or
// in the parser) is logged with its stack instead of killing every
// machine's netboot.
func (s *Server) serveOne(conn *net.UDPConn, pkt []byte, peer netip.AddrPort, port int) {
	defer func() {
		if p := recover(); p != nil {
			s.logf("dhcp: BUG: panic on a %d-byte packet from %v: %v\n%s", len(pkt), peer, p, debug.Stack())
		}
	}()
	req, err := dhcpv4.FromBytes(pkt)
	if err != nil {
		s.logf("dhcp: dropping malformed %d-byte packet from %v: %v", len(pkt), peer, err)
		return
	}
	resp, err := s.handle(req, port)
	if err != nil {
		s.logf("dhcp: dropping %v from %v (%v): %v", req.MessageType(), req.ClientHWAddr, peer, err)
		return
	}
	if resp == nil {
		return
	}
	dst := replyDest(req, resp, peer, port)
	if _, err := conn.WriteToUDPAddrPort(resp.ToBytes(), dst); err != nil {
		s.logf("dhcp: sending %v to %v: %v", resp.MessageType(), dst, err)
	}
}

// replyDest picks where an answer goes. Relays are refused in handle, so
// this is the same-segment part of RFC 2131 4.1: broadcast when the client
// has no address yet or asks for broadcast (firmware often cannot take a
// unicast to an address it has not configured, and we cannot ARP for it
// either), unicast to ciaddr otherwise. PXE boot server answers (port
// 4011) go back to the address and port the request came from.
func replyDest(req, resp *dhcpv4.DHCPv4, peer netip.AddrPort, port int) netip.AddrPort {
	bcast := netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), dhcpv4.ClientPort)
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return bcast
	}
	if port == portPXE {
		if a := peer.Addr().Unmap(); a.Is4() && !a.IsUnspecified() {
			return netip.AddrPortFrom(a, peer.Port())
		}
		return bcast
	}
	if ci, ok := addr4(req.ClientIPAddr); ok && !ci.IsUnspecified() && !req.IsBroadcast() {
		return netip.AddrPortFrom(ci, dhcpv4.ClientPort)
	}
	return bcast
}
