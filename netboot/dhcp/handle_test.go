package dhcp

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func inTestPool(ip net.IP) bool {
	a, ok := addr4(ip)
	return ok && a.Compare(netip.MustParseAddr("10.77.0.100")) >= 0 && a.Compare(netip.MustParseAddr("10.77.0.199")) <= 0
}

// Full mode, every kind of client: DISCOVER -> OFFER -> REQUEST -> ACK,
// with the lease options and exactly the boot options the kind needs.
func TestFullDORAEachKind(t *testing.T) {
	for i, k := range kinds() {
		t.Run(k.name, func(t *testing.T) {
			s, _ := newServer(t, fullConfig())
			m := mac(i)
			d := discover(t, m, k.opts...)
			offer := mustHandle(t, s, d)
			if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("DISCOVER: got %v, want OFFER", offer)
			}
			if !inTestPool(offer.YourIPAddr) {
				t.Errorf("offered %v, outside the pool", offer.YourIPAddr)
			}
			if !offer.ServerIdentifier().Equal(testServerIP) {
				t.Errorf("option 54 = %v", offer.ServerIdentifier())
			}
			if got := offer.IPAddressLeaseTime(0); got != time.Hour {
				t.Errorf("lease time %v", got)
			}
			if ones, _ := offer.SubnetMask().Size(); ones != 24 {
				t.Errorf("netmask /%d", ones)
			}
			if r := offer.Router(); len(r) != 1 || !r[0].Equal(testServerIP) {
				t.Errorf("router %v", r)
			}
			if d := offer.DNS(); len(d) != 1 || !d[0].Equal(net.IPv4(10, 77, 0, 2)) {
				t.Errorf("dns %v", d)
			}
			checkBoot(t, k, offer)

			ack := mustHandle(t, s, requestFrom(t, offer, k.opts...))
			if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				t.Fatalf("REQUEST: got %v, want ACK", ack)
			}
			if !ack.YourIPAddr.Equal(offer.YourIPAddr) {
				t.Errorf("ACK %v, offered %v", ack.YourIPAddr, offer.YourIPAddr)
			}
			checkBoot(t, k, ack)

			// A DISCOVER from a leased client gets its address again.
			again := mustHandle(t, s, discover(t, m, k.opts...))
			if !again.YourIPAddr.Equal(offer.YourIPAddr) {
				t.Errorf("second DISCOVER offered %v, lease is %v", again.YourIPAddr, offer.YourIPAddr)
			}
		})
	}
}

// Proxy mode, every kind of client: PXE and HTTP clients get a proxy offer
// with no address and the boot file, and the port 4011 ACK; anything else
// gets nothing, whatever it sends.
func TestProxyEachKind(t *testing.T) {
	clientIP := net.IPv4(10, 77, 0, 55).To4()
	other := net.IPv4(10, 77, 0, 254).To4() // the site's DHCP server
	for i, k := range kinds() {
		t.Run(k.name, func(t *testing.T) {
			s, _ := newServer(t, proxyConfig())
			m := mac(i)
			d := discover(t, m, k.opts...)
			offer, err := s.handle(d, portDHCP)
			if err != nil {
				t.Fatal(err)
			}
			if !k.proxy {
				if offer != nil {
					t.Fatalf("proxy answered a non-PXE client: %s", offer.Summary())
				}
				for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform,
					dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline} {
					for _, port := range []int{portDHCP, portPXE, portAny} {
						req := message(t, m, mt, append([]dhcpv4.Modifier{dhcpv4.WithClientIP(clientIP)}, k.opts...)...)
						if r, _ := s.handle(req, port); r != nil {
							t.Errorf("proxy answered %v on port %d from a non-PXE client", mt, port)
						}
					}
				}
				return
			}
			if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("got %v, want a proxy OFFER", offer)
			}
			checkInvariants(t, d, offer)
			if !offer.YourIPAddr.IsUnspecified() {
				t.Errorf("proxy offer has yiaddr %v", offer.YourIPAddr)
			}
			if !offer.ServerIdentifier().Equal(testServerIP) {
				t.Errorf("option 54 = %v", offer.ServerIdentifier())
			}
			if offer.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || offer.Options.Has(dhcpv4.OptionSubnetMask) {
				t.Errorf("proxy offer carries lease options: %s", offer.Summary())
			}
			checkBoot(t, k, offer)

			// The client takes the site server's address: we stay silent.
			sel := message(t, m, dhcpv4.MessageTypeRequest, append([]dhcpv4.Modifier{
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(other)),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(clientIP))}, k.opts...)...)
			if r := mustHandle(t, s, sel); r != nil {
				t.Errorf("proxy answered a REQUEST for another server: %s", r.Summary())
			}
			// A renewal on port 67 is the site server's business.
			renew := message(t, m, dhcpv4.MessageTypeRequest, append([]dhcpv4.Modifier{dhcpv4.WithClientIP(clientIP)}, k.opts...)...)
			if r, _ := s.handle(renew, portDHCP); r != nil {
				t.Errorf("proxy answered a renewal on port 67")
			}
			// The boot server request on port 4011.
			ack, err := s.handle(renew, portPXE)
			if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				t.Fatalf("port 4011 REQUEST: %v, %v; want ACK", ack, err)
			}
			checkInvariants(t, renew, ack)
			if !ack.YourIPAddr.IsUnspecified() || !ack.ClientIPAddr.Equal(clientIP) {
				t.Errorf("4011 ACK yiaddr %v ciaddr %v", ack.YourIPAddr, ack.ClientIPAddr)
			}
			checkBoot(t, k, ack)
			peer := netip.MustParseAddrPort("10.77.0.55:4011")
			if got := replyDest(renew, ack, peer, portPXE); got != peer {
				t.Errorf("4011 ACK goes to %v, want back to %v", got, peer)
			}
			// A DISCOVER on 4011 is not a thing.
			if r, _ := s.handle(discover(t, m, k.opts...), portPXE); r != nil {
				t.Errorf("answered a DISCOVER on port 4011")
			}
		})
	}
}

// The Booter's "no" withholds boot options (full) or the whole answer (proxy).
func TestBooterRefuses(t *testing.T) {
	pxe := kinds()[1]
	s, _ := newServer(t, fullConfig())
	offer := mustHandle(t, s, discover(t, deniedMAC, pxe.opts...))
	if offer == nil || !inTestPool(offer.YourIPAddr) {
		t.Fatalf("refused machine got no address: %v", offer)
	}
	checkBoot(t, kind{name: "denied"}, offer)

	p, _ := newServer(t, proxyConfig())
	if r := mustHandle(t, p, discover(t, deniedMAC, pxe.opts...)); r != nil {
		t.Errorf("proxy answered a refused machine: %s", r.Summary())
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []dhcpv4.Modifier
		want Client
	}{
		{"none", nil, Client{Arch: ArchUnknown}},
		{"bios", []dhcpv4.Modifier{withArch(0), withVendor("PXEClient:Arch:00000")}, Client{Arch: ArchBIOS, PXE: true}},
		{"uefi9", []dhcpv4.Modifier{withArch(9), withVendor("PXEClient")}, Client{Arch: ArchUEFIx64Alt, PXE: true}},
		{"http", []dhcpv4.Modifier{withArch(16), withVendor("HTTPClient:Arch:00016")}, Client{Arch: ArchUEFIx64HTTP, HTTPClient: true}},
		{"ipxe-raw", []dhcpv4.Modifier{dhcpv4.WithUserClass("iPXE", false)}, Client{Arch: ArchUnknown, IPXE: true}},
		{"ipxe-rfc3004", []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptRFC3004UserClass([]string{"foo", "iPXE"}))}, Client{Arch: ArchUnknown, IPXE: true}},
		{"other-user-class", []dhcpv4.Modifier{dhcpv4.WithUserClass("gPXE", false)}, Client{Arch: ArchUnknown}},
		{"short-arch", []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{7})}, Client{Arch: ArchUnknown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := classify(discover(t, mac(1), tc.opts...))
			if c.Arch != tc.want.Arch || c.IPXE != tc.want.IPXE || c.HTTPClient != tc.want.HTTPClient || c.PXE != tc.want.PXE || c.MAC.String() != mac(1).String() {
				t.Errorf("classify = %+v, want %+v", c, tc.want)
			}
		})
	}
	if !ArchUEFIx64.UEFIx64() || !ArchUEFIx64Alt.UEFIx64() || !ArchUEFIx64HTTP.UEFIx64() || ArchBIOS.UEFIx64() {
		t.Error("UEFIx64")
	}
}

func TestRequestNAK(t *testing.T) {
	s, _ := newServer(t, fullConfig())
	offer := mustHandle(t, s, discover(t, mac(1)))
	ack := mustHandle(t, s, requestFrom(t, offer))
	leased := ack.YourIPAddr

	for _, tc := range []struct {
		name string
		req  *dhcpv4.DHCPv4
	}{
		{"foreign network (INIT-REBOOT)", message(t, mac(2), dhcpv4.MessageTypeRequest,
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(192, 168, 1, 20))))},
		{"foreign network (RENEWING)", message(t, mac(2), dhcpv4.MessageTypeRequest,
			dhcpv4.WithClientIP(net.IPv4(192, 168, 1, 20)))},
		{"another client's address", message(t, mac(2), dhcpv4.MessageTypeRequest,
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(leased)))},
		{"the server's own address", message(t, mac(2), dhcpv4.MessageTypeRequest,
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(testServerIP)))},
		{"outside the pool", message(t, mac(2), dhcpv4.MessageTypeRequest,
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 20))))},
		{"not what was offered", message(t, mac(1), dhcpv4.MessageTypeRequest,
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP)),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 150))))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustHandle(t, s, tc.req)
			if r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
				t.Fatalf("got %v, want NAK", r)
			}
			if !r.YourIPAddr.IsUnspecified() || r.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
				t.Errorf("NAK carries an address: %s", r.Summary())
			}
			if !r.IsBroadcast() {
				t.Error("NAK without broadcast flag")
			}
			if got := replyDest(tc.req, r, netip.MustParseAddrPort("10.77.0.150:68"), portDHCP); got.Addr() != netip.MustParseAddr("255.255.255.255") {
				t.Errorf("NAK goes to %v", got)
			}
		})
	}

	// INIT-REBOOT and RENEWING for the right address are ACKed.
	for _, req := range []*dhcpv4.DHCPv4{
		message(t, mac(1), dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(leased))),
		message(t, mac(1), dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(leased)),
	} {
		if r := mustHandle(t, s, req); r == nil || r.MessageType() != dhcpv4.MessageTypeAck || !r.YourIPAddr.Equal(leased) {
			t.Errorf("renewal: got %v", r)
		}
	}
	// A REQUEST that names no address at all is dropped with an error.
	if _, err := s.Handle(message(t, mac(3), dhcpv4.MessageTypeRequest)); !errors.Is(err, ErrMalformed) {
		t.Errorf("addressless REQUEST: err %v", err)
	}
}

// A client that picks another server's offer frees the address we held.
func TestRequestForOtherServerFreesHold(t *testing.T) {
	cfg := fullConfig()
	cfg.PoolEnd = cfg.PoolStart // one address
	s, _ := newServer(t, cfg)
	offer := mustHandle(t, s, discover(t, mac(1)))
	if _, err := s.Handle(discover(t, mac(2))); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("the only address is held, yet: %v", err)
	}
	req := requestFrom(t, offer, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 254))))
	if r := mustHandle(t, s, req); r != nil {
		t.Fatalf("answered a REQUEST for another server: %s", r.Summary())
	}
	if r := mustHandle(t, s, discover(t, mac(2))); r == nil || !r.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Errorf("freed address not offered again: %v", r)
	}
}

func TestPoolExhaustionAndExpiry(t *testing.T) {
	cfg := fullConfig()
	cfg.PoolEnd = net.IPv4(10, 77, 0, 101) // two addresses
	s, clk := newServer(t, cfg)
	got := map[string]bool{}
	for i := 1; i <= 2; i++ {
		ack := mustHandle(t, s, requestFrom(t, mustHandle(t, s, discover(t, mac(i)))))
		got[ack.YourIPAddr.String()] = true
	}
	if len(got) != 2 {
		t.Fatalf("two clients got %v", got)
	}
	r, err := s.Handle(discover(t, mac(3)))
	if !errors.Is(err, ErrPoolExhausted) || r != nil {
		t.Fatalf("third client: %v, %v; want ErrPoolExhausted", r, err)
	}
	// Offer holds expire: a client that never REQUESTs does not keep it.
	clk.advance(59 * time.Minute)
	if _, err := s.Handle(discover(t, mac(3))); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("leases still live, yet: %v", err)
	}
	clk.advance(2 * time.Minute) // past the 1 h lease
	offer := mustHandle(t, s, discover(t, mac(3)))
	if offer == nil || !got[offer.YourIPAddr.String()] {
		t.Fatalf("after expiry: %v", offer)
	}
	if ack := mustHandle(t, s, requestFrom(t, offer)); ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("after expiry: %s", ack.Summary())
	}
}

func TestReservation(t *testing.T) {
	cfg := fullConfig()
	resIP := net.IPv4(10, 77, 0, 10).To4()      // outside the pool
	resInPool := net.IPv4(10, 77, 0, 100).To4() // inside the pool
	cfg.Reservations = []Reservation{
		{MAC: mac(7), IP: resIP, Hostname: "node7"},
		{MAC: mac(8), IP: resInPool},
	}
	cfg.PoolEnd = net.IPv4(10, 77, 0, 101)
	s, _ := newServer(t, cfg)

	offer := mustHandle(t, s, discover(t, mac(7), kinds()[1].opts...))
	if !offer.YourIPAddr.Equal(resIP) || offer.HostName() != "node7" {
		t.Fatalf("reserved client offered %v %q", offer.YourIPAddr, offer.HostName())
	}
	checkBoot(t, kinds()[1], offer)
	ack := mustHandle(t, s, requestFrom(t, offer))
	if !ack.YourIPAddr.Equal(resIP) || ack.HostName() != "node7" {
		t.Fatalf("reserved client ACKed %v %q", ack.YourIPAddr, ack.HostName())
	}
	// Reserved pool addresses never go to others: .100 is mac(8)'s, so
	// the pool has one address left for everybody else.
	o := mustHandle(t, s, discover(t, mac(1)))
	if !o.YourIPAddr.Equal(net.IPv4(10, 77, 0, 101)) {
		t.Fatalf("got %v, want the one unreserved address", o.YourIPAddr)
	}
	if _, err := s.Handle(discover(t, mac(2))); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("reserved address given away? %v", err)
	}
	// Asking for a reserved address gets a NAK; the owner gets it.
	nak := mustHandle(t, s, message(t, mac(2), dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(resInPool))))
	if nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("reserved address requested by another: %s", nak.Summary())
	}
	// The owner may not take another address either.
	nak = mustHandle(t, s, message(t, mac(8), dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 150)))))
	if nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("reserved client got another address: %s", nak.Summary())
	}
	if o := mustHandle(t, s, discover(t, mac(8))); !o.YourIPAddr.Equal(resInPool) {
		t.Errorf("owner offered %v", o.YourIPAddr)
	}
}

func TestReleaseDeclineInform(t *testing.T) {
	cfg := fullConfig()
	cfg.PoolEnd = cfg.PoolStart // one address
	s, clk := newServer(t, cfg)
	ack := mustHandle(t, s, requestFrom(t, mustHandle(t, s, discover(t, mac(1)))))
	ip := ack.YourIPAddr

	// RELEASE frees the address; no answer.
	rel, err := dhcpv4.NewReleaseFromACK(ack)
	if err != nil {
		t.Fatal(err)
	}
	if r := mustHandle(t, s, rel); r != nil {
		t.Fatalf("answered RELEASE: %s", r.Summary())
	}
	offer := mustHandle(t, s, discover(t, mac(2)))
	if !offer.YourIPAddr.Equal(ip) {
		t.Fatalf("released address not reused: %v", offer.YourIPAddr)
	}
	ack2 := mustHandle(t, s, requestFrom(t, offer))

	// DECLINE takes the address out of the pool for a while.
	dec := message(t, mac(2), dhcpv4.MessageTypeDecline,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ack2.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP)))
	if r := mustHandle(t, s, dec); r != nil {
		t.Fatalf("answered DECLINE: %s", r.Summary())
	}
	if _, err := s.Handle(discover(t, mac(3))); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("declined address offered again at once: %v", err)
	}
	// A DECLINE from someone who does not hold the address changes nothing.
	clk.advance(declineHold + time.Second)
	offer3 := mustHandle(t, s, discover(t, mac(3)))
	if !offer3.YourIPAddr.Equal(ip) {
		t.Fatalf("declined address not back after the hold: %v", offer3.YourIPAddr)
	}
	forged := message(t, mac(4), dhcpv4.MessageTypeDecline, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)))
	mustHandle(t, s, forged)
	if ack := mustHandle(t, s, requestFrom(t, offer3)); ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("forged DECLINE took the address: %s", ack.Summary())
	}

	// INFORM: configuration without a lease, unicast back.
	clientIP := net.IPv4(10, 77, 0, 33).To4()
	inf := message(t, mac(5), dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(clientIP))
	r := mustHandle(t, s, inf)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("INFORM: %v", r)
	}
	if !r.YourIPAddr.IsUnspecified() || r.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || r.SubnetMask() == nil {
		t.Errorf("INFORM answer: %s", r.Summary())
	}
	if got := replyDest(inf, r, netip.MustParseAddrPort("10.77.0.33:68"), portDHCP); got != netip.MustParseAddrPort("10.77.0.33:68") {
		t.Errorf("INFORM answer goes to %v", got)
	}
	if _, err := s.Handle(message(t, mac(5), dhcpv4.MessageTypeInform)); !errors.Is(err, ErrMalformed) {
		t.Errorf("INFORM without ciaddr: %v", err)
	}
}

func TestReplyDest(t *testing.T) {
	bcast := netip.MustParseAddrPort("255.255.255.255:68")
	ack := message(t, mac(1), dhcpv4.MessageTypeAck)
	for _, tc := range []struct {
		name string
		req  *dhcpv4.DHCPv4
		peer string
		port int
		want netip.AddrPort
	}{
		{"no address", message(t, mac(1), dhcpv4.MessageTypeDiscover), "0.0.0.0:68", portDHCP, bcast},
		{"broadcast flag", message(t, mac(1), dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(net.IPv4(10, 77, 0, 9)), dhcpv4.WithBroadcast(true)), "10.77.0.9:68", portDHCP, bcast},
		{"renewing", message(t, mac(1), dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(net.IPv4(10, 77, 0, 9))), "10.77.0.9:68", portDHCP, netip.MustParseAddrPort("10.77.0.9:68")},
		{"pxe 4011", message(t, mac(1), dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(net.IPv4(10, 77, 0, 9))), "10.77.0.9:4011", portPXE, netip.MustParseAddrPort("10.77.0.9:4011")},
		{"pxe 4011 no source", message(t, mac(1), dhcpv4.MessageTypeRequest), "0.0.0.0:68", portPXE, bcast},
	} {
		if got := replyDest(tc.req, ack, netip.MustParseAddrPort(tc.peer), tc.port); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMalformed(t *testing.T) {
	for _, mode := range []Config{fullConfig(), proxyConfig()} {
		s, _ := newServer(t, mode)
		reply := message(t, mac(1), dhcpv4.MessageTypeDiscover)
		reply.OpCode = dhcpv4.OpcodeBootReply
		noType := message(t, mac(1), dhcpv4.MessageTypeDiscover)
		noType.Options.Del(dhcpv4.OptionDHCPMessageType)
		relayed := message(t, mac(1), dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.IPv4(10, 1, 1, 1)))
		noMAC := message(t, nil, dhcpv4.MessageTypeDiscover)
		if r, err := s.Handle(relayed); r != nil || !errors.Is(err, ErrRelayed) {
			t.Errorf("%v relayed: %v, %v; want ErrRelayed", mode.Mode, r, err)
		}
		for name, req := range map[string]*dhcpv4.DHCPv4{"reply": reply, "bootp": noType, "no mac": noMAC, "nil": nil} {
			r, err := s.Handle(req)
			if r != nil || !errors.Is(err, ErrMalformed) {
				t.Errorf("%v %s: %v, %v; want ErrMalformed", mode.Mode, name, r, err)
			}
		}
		// Messages only servers send get no answer and no error.
		for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak} {
			if r := mustHandle(t, s, message(t, mac(1), mt)); r != nil {
				t.Errorf("answered %v", mt)
			}
		}
	}
}

func TestLeasePersistenceRoundTrip(t *testing.T) {
	cfg := fullConfig()
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.json")
	s, clk := newServer(t, cfg)
	leased := map[int]net.IP{}
	for i := 1; i <= 3; i++ {
		ack := mustHandle(t, s, requestFrom(t, mustHandle(t, s, discover(t, mac(i)))))
		leased[i] = ack.YourIPAddr
	}
	// Only offered, never ACKed: not a lease, not persisted.
	held := mustHandle(t, s, discover(t, mac(9))).YourIPAddr
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(cfg.LeaseFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), held.String()) || !strings.Contains(string(data), leased[2].String()) {
		t.Errorf("lease file:\n%s", data)
	}

	// Restart: the same clients get the same addresses, a new one none of them.
	s2, err := build(cfg, clk.now)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	for i := 3; i >= 1; i-- { // reverse order, so allocation order cannot fake it
		o := mustHandle(t, s2, discover(t, mac(i)))
		if !o.YourIPAddr.Equal(leased[i]) {
			t.Errorf("client %d: %v after restart, had %v", i, o.YourIPAddr, leased[i])
		}
	}
	o := mustHandle(t, s2, discover(t, mac(20)))
	for _, ip := range leased {
		if o.YourIPAddr.Equal(ip) {
			t.Errorf("new client got leased address %v", ip)
		}
	}
	// A renewal straight after restart is ACKed without a DISCOVER.
	if r := mustHandle(t, s2, message(t, mac(1), dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(leased[1]))); r.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("renewal after restart: %s", r.Summary())
	}

	// Expired leases are not loaded.
	clk.advance(2 * time.Hour)
	s3, err := build(cfg, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	s3.mu.Lock()
	n := len(s3.byMAC)
	s3.mu.Unlock()
	if n != 0 {
		t.Errorf("%d leases loaded, all expired", n)
	}
}

func TestCorruptLeaseFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":      "this is not json",
		"truncated":    `{"version":1,"leases":[{"mac":"02:42:00:00:00:01","ip":"10.77.0.100"`,
		"version":      `{"version":7,"leases":[]}`,
		"bad mac":      `{"version":1,"leases":[{"mac":"zz","ip":"10.77.0.100","expiry":"2099-01-01T00:00:00Z"}]}`,
		"bad ip":       `{"version":1,"leases":[{"mac":"02:42:00:00:00:01","ip":"10.77.0","expiry":"2099-01-01T00:00:00Z"}]}`,
		"ipv6":         `{"version":1,"leases":[{"mac":"02:42:00:00:00:01","ip":"fe80::1","expiry":"2099-01-01T00:00:00Z"}]}`,
		"duplicate ip": `{"version":1,"leases":[{"mac":"02:42:00:00:00:01","ip":"10.77.0.100","expiry":"2099-01-01T00:00:00Z"},{"mac":"02:42:00:00:00:02","ip":"10.77.0.100","expiry":"2099-01-01T00:00:00Z"}]}`,
		"unknown key":  `{"version":1,"leases":[],"extra":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			cfg := fullConfig()
			cfg.LeaseFile = filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(cfg.LeaseFile, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := New(cfg)
			if !errors.Is(err, ErrCorruptLeaseFile) || !strings.Contains(err.Error(), cfg.LeaseFile) {
				t.Fatalf("New: %v; want ErrCorruptLeaseFile naming the file", err)
			}
			t.Logf("%v", err)
		})
	}
	// Missing and empty files are an empty table.
	for _, content := range []*string{nil, new(string)} {
		cfg := fullConfig()
		cfg.LeaseFile = filepath.Join(t.TempDir(), "leases")
		if content != nil {
			if err := os.WriteFile(cfg.LeaseFile, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := New(cfg); err != nil {
			t.Errorf("New: %v", err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"no server ip":     func(c *Config) { c.ServerIP = nil },
		"v6 server ip":     func(c *Config) { c.ServerIP = net.ParseIP("fe80::1") },
		"no mask":          func(c *Config) { c.Netmask = nil },
		"pool outside":     func(c *Config) { c.PoolEnd = net.IPv4(10, 78, 0, 1) },
		"pool reversed":    func(c *Config) { c.PoolStart, c.PoolEnd = c.PoolEnd, c.PoolStart },
		"reservation away": func(c *Config) { c.Reservations = []Reservation{{MAC: mac(1), IP: net.IPv4(192, 168, 0, 1)}} },
		"reserved twice": func(c *Config) {
			c.Reservations = []Reservation{{MAC: mac(1), IP: net.IPv4(10, 77, 0, 5)}, {MAC: mac(2), IP: net.IPv4(10, 77, 0, 5)}}
		},
		"proxy without booter": func(c *Config) { c.Mode, c.Booter = Proxy, nil },
		"bad mode":             func(c *Config) { c.Mode = 9 },
	} {
		cfg := fullConfig()
		mod(&cfg)
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

// Boot file names that do not fit the 128-byte header field live in
// option 67 alone, never cut short.
func TestLongBootURL(t *testing.T) {
	long := "http://10.77.0.1:8080/" + strings.Repeat("x", 200) + ".ipxe"
	cfg := fullConfig()
	cfg.Booter = func(Client) (Boot, bool) { return Boot{Filename: long, NextServer: net.IPv4(10, 77, 0, 3)}, true }
	s, _ := newServer(t, cfg)
	o := mustHandle(t, s, discover(t, mac(1), kinds()[3].opts...))
	if o.BootFileName != "" || o.BootFileNameOption() != long {
		t.Errorf("file %q, option 67 %q", o.BootFileName, o.BootFileNameOption())
	}
	if !o.ServerIPAddr.Equal(net.IPv4(10, 77, 0, 3)) || o.TFTPServerName() != "10.77.0.3" {
		t.Errorf("next server %v / %q", o.ServerIPAddr, o.TFTPServerName())
	}
	back, err := dhcpv4.FromBytes(o.ToBytes())
	if err != nil || back.BootFileNameOption() != long {
		t.Errorf("long option 67 does not survive the wire: %v", err)
	}
}

// Handle is called from several listeners at once, with the lease writer
// beside them: every client still gets its own address (run with -race).
func TestConcurrentHandle(t *testing.T) {
	cfg := fullConfig()
	cfg.LeaseFile = filepath.Join(t.TempDir(), "leases.json")
	cfg.Logf = func(string, ...any) {}
	s, _ := newServer(t, cfg)
	const workers, each = 4, 20 // 80 clients, pool of 100
	got := make(chan string, workers*each)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20; i++ {
			if err := s.Flush(); err != nil {
				t.Error(err)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for i := 0; i < each; i++ {
				m := mac(1000 + w*each + i)
				o, err := s.Handle(discover(t, m))
				if err != nil {
					t.Error(err)
					return
				}
				a, err := s.Handle(requestFrom(t, o))
				if err != nil || a.MessageType() != dhcpv4.MessageTypeAck {
					t.Errorf("%v: %v %v", m, a, err)
					return
				}
				got <- a.YourIPAddr.String()
			}
		})
	}
	wg.Wait()
	<-done
	close(got)
	seen := map[string]bool{}
	for ip := range got {
		if seen[ip] {
			t.Errorf("%s leased twice", ip)
		}
		seen[ip] = true
	}
	if len(seen) != workers*each {
		t.Errorf("%d leases, want %d", len(seen), workers*each)
	}
}

// Lookup names the machine behind an address for the fleet page: a
// reservation before the machine asks, a bound lease (not an offer) after,
// nothing once the lease ran out or in proxy mode.
func TestLookupNamesTheMachineOfAnAddress(t *testing.T) {
	cfg := fullConfig()
	resIP := netip.MustParseAddr("10.77.0.10")
	cfg.Reservations = []Reservation{{MAC: mac(7), IP: net.IP(resIP.AsSlice()), Hostname: "node7"}}
	s, clk := newServer(t, cfg)
	if m, h, ok := s.Lookup(resIP); !ok || m.String() != mac(7).String() || h != "node7" {
		t.Fatalf("reserved address: %v %q %v", m, h, ok)
	}
	offer := mustHandle(t, s, discover(t, mac(1)))
	ip, _ := netip.AddrFromSlice(offer.YourIPAddr.To4())
	if _, _, ok := s.Lookup(ip); ok {
		t.Fatalf("an offer counts as the machine's address")
	}
	mustHandle(t, s, requestFrom(t, offer))
	if m, h, ok := s.Lookup(netip.AddrFrom16(ip.As16())); !ok || m.String() != mac(1).String() || h != "" {
		t.Fatalf("bound lease (IPv4-mapped): %v %q %v", m, h, ok)
	}
	clk.advance(2 * time.Hour)
	if m, _, ok := s.Lookup(ip); ok {
		t.Fatalf("expired lease still names %v", m)
	}
	p, _ := newServer(t, proxyConfig())
	if _, _, ok := p.Lookup(resIP); ok {
		t.Fatal("proxy mode names a machine")
	}
}
