package tftp

import (
	"net"
	"net/netip"
)

// receiver reads requests from the server socket and, where it can, tells
// which local address each one was sent to.
type receiver interface {
	read(buf []byte) (n int, remote net.Addr, local netip.Addr, err error)
}

// plainReceiver is for sockets bound to one address (the transfer socket
// binds to the same one) and for platforms without packet info.
type plainReceiver struct {
	conn  net.PacketConn
	local netip.Addr
}

func (p plainReceiver) read(buf []byte) (int, net.Addr, netip.Addr, error) {
	n, remote, err := p.conn.ReadFrom(buf)
	return n, remote, p.local, err
}

// boundAddr is the local IP conn is bound to, or the zero Addr for a
// wildcard bind or a socket that is not UDP.
func boundAddr(conn net.PacketConn) netip.Addr {
	ua, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok || ua.IP == nil || ua.IP.IsUnspecified() {
		return netip.Addr{}
	}
	a, ok := netip.AddrFromSlice(ua.IP)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}
