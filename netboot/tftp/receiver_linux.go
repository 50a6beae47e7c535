package tftp

import (
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// newReceiver asks the kernel for each request's destination address when
// conn is a wildcard-bound UDP socket: without it, a transfer socket bound
// to the wildcard would answer from whatever address the route picks, and
// PXE ROMs drop DATA that does not come from the server they asked.
func newReceiver(conn net.PacketConn) receiver {
	plain := plainReceiver{conn: conn, local: boundAddr(conn)}
	uc, ok := conn.(*net.UDPConn)
	if !ok || plain.local.IsValid() {
		return plain
	}
	if r, ok := pktinfoReceiverFor(uc); ok {
		return r
	}
	return plain
}

// pktinfoReceiverFor turns on packet info on uc, whatever it is bound to.
func pktinfoReceiverFor(uc *net.UDPConn) (*pktinfoReceiver, bool) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, false
	}
	var v4err, v6err error
	cerr := rc.Control(func(fd uintptr) {
		// One of the two fails depending on the socket's family; a
		// dual-stack IPv6 socket takes both.
		v4err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		v6err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	})
	if cerr != nil || (v4err != nil && v6err != nil) {
		return nil, false
	}
	return &pktinfoReceiver{conn: uc, oob: make([]byte, 256)}, true
}

type pktinfoReceiver struct {
	conn *net.UDPConn
	oob  []byte
}

func (p *pktinfoReceiver) read(buf []byte) (int, net.Addr, netip.Addr, error) {
	n, oobn, _, remote, err := p.conn.ReadMsgUDPAddrPort(buf, p.oob)
	if err != nil {
		return n, nil, netip.Addr{}, err
	}
	raddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()))
	return n, raddr, localFromOOB(p.oob[:oobn]), nil
}

// localFromOOB extracts the local address from IP_PKTINFO/IPV6_PKTINFO, or
// returns the zero Addr (the transfer socket then binds to the wildcard).
func localFromOOB(oob []byte) netip.Addr {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO &&
			len(m.Data) >= unix.SizeofInet4Pktinfo:
			// Spec_dst, not Addr: it is the interface's own address
			// even when the request was broadcast.
			a := netip.AddrFrom4([4]byte(m.Data[4:8]))
			if a.IsValid() && !a.IsUnspecified() {
				return a
			}
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO &&
			len(m.Data) >= unix.SizeofInet6Pktinfo:
			a := netip.AddrFrom16([16]byte(m.Data[:16])).Unmap()
			if a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() {
				return a
			}
		}
	}
	return netip.Addr{}
}
