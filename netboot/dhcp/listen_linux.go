package dhcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// listen opens a UDP socket on addr:port bound to iface. Port 67 must be
// bound to 0.0.0.0, not our address: DHCP clients without an address
// broadcast to 255.255.255.255, which a socket bound to a unicast address
// never sees. SO_BINDTODEVICE keeps it to the netboot segment.
//
// SO_REUSEADDR lets the site's DHCP server (proxy mode on the same host)
// bind the port too; both sockets then get every broadcast. SO_REUSEPORT
// is left off on purpose: it would load-balance unicast requests between
// the two servers. Go sets SO_BROADCAST on UDP sockets already.
func listen(ctx context.Context, iface string, addr netip.Addr, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if serr == nil && iface != "" {
				serr = unix.BindToDevice(int(fd), iface)
				if serr != nil {
					serr = fmt.Errorf("SO_BINDTODEVICE %q: %w", iface, serr)
				}
			}
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", netip.AddrPortFrom(addr, uint16(port)).String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}
