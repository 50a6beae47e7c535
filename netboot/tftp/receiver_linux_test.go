package tftp

import (
	"net"
	"net/netip"
	"testing"
)

// TestPktinfo checks the kernel's packet info is parsed: the receiver is
// forced on a socket bound to 127.0.0.1 (tests bind no wildcard address),
// where the local address it reports must be 127.0.0.1.
func TestPktinfo(t *testing.T) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	r, ok := pktinfoReceiverFor(uc)
	if !ok {
		t.Fatal("cannot enable IP_PKTINFO")
	}
	c := rawConn(t)
	if _, err := c.WriteToUDP([]byte("hello"), uc.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, remote, local, err := r.read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "hello" || remote.String() != c.LocalAddr().String() ||
		local != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("got %q from %v to %v", buf[:n], remote, local)
	}
	if a := localFromOOB([]byte{1, 2, 3}); a.IsValid() {
		t.Errorf("garbage control message gave %v", a)
	}
}
