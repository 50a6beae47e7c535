package dhcp

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Test network: the server is 10.77.0.1/24 and hands out .100-.199.
var (
	testServerIP = net.IPv4(10, 77, 0, 1).To4()
	testMask     = net.CIDRMask(24, 32)
)

const (
	scriptURL = "http://10.77.0.1:8080/boot.ipxe"
	httpEFI   = "http://10.77.0.1:8080/ipxe.efi"
	biosFile  = "undionly.kpxe"
	uefiFile  = "ipxe.efi"
)

// deniedMAC is a machine the test Booter refuses.
var deniedMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xde, 0xad}

func mac(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x42, 0, 0, byte(i >> 8), byte(i)}
}

// testBooter boots the way imprint serve does: iPXE gets the script URL
// (else it chain-loads itself forever), HTTP boot an iPXE binary by URL,
// PXE ROMs an iPXE binary by TFTP.
func testBooter(c Client) (Boot, bool) {
	if bytes.Equal(c.MAC, deniedMAC) {
		return Boot{}, false
	}
	switch {
	case c.IPXE:
		return Boot{Filename: scriptURL}, true
	case c.HTTPClient:
		return Boot{Filename: httpEFI}, true
	case c.Arch == ArchBIOS:
		return Boot{Filename: biosFile}, true
	default:
		return Boot{Filename: uefiFile}, true
	}
}

// fakeClock is the test server's clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func fullConfig() Config {
	return Config{
		Mode:      Full,
		ServerIP:  testServerIP,
		PoolStart: net.IPv4(10, 77, 0, 100),
		PoolEnd:   net.IPv4(10, 77, 0, 199),
		Netmask:   testMask,
		Router:    testServerIP,
		DNS:       []net.IP{net.IPv4(10, 77, 0, 2)},
		LeaseTime: time.Hour,
		Booter:    testBooter,
	}
}

func proxyConfig() Config {
	return Config{Mode: Proxy, ServerIP: testServerIP, Booter: testBooter}
}

func newServer(t testing.TB, cfg Config) (*Server, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	s, err := build(cfg, clk.now)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, clk
}

// kind is one sort of client the server meets.
type kind struct {
	name string
	opts []dhcpv4.Modifier
	// What a boot answer must carry; boot=false: none at all.
	boot     bool
	vendor   string // option 60 in the answer
	filename string
	proxy    bool   // answered in proxy mode
	next     net.IP // siaddr and option 66; nil: testServerIP
}

func withArch(a uint16) dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{byte(a >> 8), byte(a)})
}

func withVendor(v string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptClassIdentifier(v))
}

func kinds() []kind {
	return []kind{
		{
			name: "bios-pxe",
			opts: []dhcpv4.Modifier{withArch(0), withVendor("PXEClient:Arch:00000:UNDI:002001")},
			boot: true, vendor: "PXEClient", filename: biosFile, proxy: true,
		},
		{
			name: "uefi-pxe",
			opts: []dhcpv4.Modifier{withArch(7), withVendor("PXEClient:Arch:00007:UNDI:003016")},
			boot: true, vendor: "PXEClient", filename: uefiFile, proxy: true,
		},
		{
			name: "uefi-http",
			opts: []dhcpv4.Modifier{withArch(16), withVendor("HTTPClient:Arch:00016:UNDI:003001")},
			boot: true, vendor: "HTTPClient", filename: httpEFI, proxy: true,
		},
		{
			// QEMU's NIC ROMs: iPXE says PXEClient and user class iPXE.
			name: "ipxe",
			opts: []dhcpv4.Modifier{withArch(7), withVendor("PXEClient:Arch:00007:UNDI:003010"),
				dhcpv4.WithUserClass("iPXE", false)},
			boot: true, vendor: "PXEClient", filename: scriptURL, proxy: true,
		},
		{
			// An iPXE build without the PXE vendor class: full mode still
			// boots it, proxy mode leaves it alone (it is not PXE).
			name: "ipxe-no-vendor-class",
			opts: []dhcpv4.Modifier{withArch(0), dhcpv4.WithUserClass("iPXE", true)},
			boot: true, filename: scriptURL, proxy: false,
		},
		{
			name: "plain",
			boot: false, proxy: false,
		},
	}
}

func discover(t testing.TB, m net.HardwareAddr, opts ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(m, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func requestFrom(t testing.TB, offer *dhcpv4.DHCPv4, opts ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	r, err := dhcpv4.NewRequestFromOffer(offer, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// message builds a client message of type mt.
func message(t testing.TB, m net.HardwareAddr, mt dhcpv4.MessageType, opts ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	all := append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(m), dhcpv4.WithMessageType(mt)}, opts...)
	p, err := dhcpv4.New(all...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustHandle(t testing.TB, s *Server, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	r, err := s.Handle(req)
	if err != nil {
		t.Fatalf("Handle(%v): %v", req.MessageType(), err)
	}
	if r != nil {
		checkInvariants(t, req, r)
	}
	return r
}

// checkInvariants holds for every answer: it is a reply to this request,
// it survives the wire, and "PXEClient" never goes out without option 43.
func checkInvariants(t testing.TB, req, r *dhcpv4.DHCPv4) {
	t.Helper()
	if r.OpCode != dhcpv4.OpcodeBootReply || r.TransactionID != req.TransactionID || !bytes.Equal(r.ClientHWAddr, req.ClientHWAddr) {
		t.Errorf("answer does not match request: %s", r.Summary())
	}
	if _, err := dhcpv4.FromBytes(r.ToBytes()); err != nil {
		t.Errorf("answer does not parse back: %v", err)
	}
	if r.ClassIdentifier() == "PXEClient" {
		o43 := r.Options.Get(dhcpv4.OptionVendorSpecificInformation)
		if !bytes.Equal(o43, []byte{6, 1, 8, 255}) {
			t.Errorf("option 60 PXEClient with option 43 = %x, want 060108ff", o43)
		}
	}
}

// checkBoot checks the boot options of an answer against what kind k must get.
func checkBoot(t testing.TB, k kind, r *dhcpv4.DHCPv4) {
	t.Helper()
	if !k.boot {
		for _, o := range []dhcpv4.OptionCode{dhcpv4.OptionBootfileName, dhcpv4.OptionTFTPServerName,
			dhcpv4.OptionClassIdentifier, dhcpv4.OptionVendorSpecificInformation} {
			if r.Options.Has(o) {
				t.Errorf("%s: non-netboot client got option %v", k.name, o)
			}
		}
		if r.BootFileName != "" {
			t.Errorf("%s: non-netboot client got file %q", k.name, r.BootFileName)
		}
		return
	}
	if got := r.BootFileNameOption(); got != k.filename {
		t.Errorf("%s: option 67 = %q, want %q", k.name, got, k.filename)
	}
	if r.BootFileName != k.filename {
		t.Errorf("%s: file field = %q, want %q", k.name, r.BootFileName, k.filename)
	}
	next := k.next
	if next == nil {
		next = testServerIP
	}
	if got := r.TFTPServerName(); got != next.String() {
		t.Errorf("%s: option 66 = %q", k.name, got)
	}
	if !r.ServerIPAddr.Equal(next) {
		t.Errorf("%s: siaddr = %v", k.name, r.ServerIPAddr)
	}
	if got := r.ClassIdentifier(); got != k.vendor {
		t.Errorf("%s: option 60 = %q, want %q", k.name, got, k.vendor)
	}
	has43 := r.Options.Has(dhcpv4.OptionVendorSpecificInformation)
	if want := k.vendor == "PXEClient"; has43 != want {
		t.Errorf("%s: option 43 present = %v, want %v", k.name, has43, want)
	}
}
