package dhcp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"
)

// The integration tests run the server and real clients in two network
// namespaces joined by a veth pair, so no packet leaves this machine's
// namespaces: 10.77.0.1/24 on the server side, nothing on the client side.
const (
	srvIf = "veth-s"
	cliIf = "veth-c"
)

type netnsPair struct{ srv, cli string }

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupNetns makes the two namespaces and the veth pair, and removes them
// when the test ends, pass or fail. Deleting a namespace deletes its end
// of the veth, and with it the pair.
func setupNetns(t *testing.T) netnsPair {
	t.Helper()
	if testing.Short() {
		t.Skip("network namespace test (-short)")
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(b[:])
	p := netnsPair{srv: "impdhcp-srv-" + id, cli: "impdhcp-cli-" + id}
	if err := ipCmd("netns", "add", p.srv); err != nil {
		testenv.Skipf(t, "cannot create network namespaces here (needs root and CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := ipCmd("netns", "del", p.srv); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := ipCmd("netns", "add", p.cli); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ipCmd("netns", "del", p.cli); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	// Both ends are created inside the namespaces; neither ever exists in
	// the host's namespace.
	for _, args := range [][]string{
		{"-n", p.srv, "link", "add", srvIf, "type", "veth", "peer", "name", cliIf, "netns", p.cli},
		{"-n", p.srv, "addr", "add", "10.77.0.1/24", "dev", srvIf},
		{"-n", p.srv, "link", "set", srvIf, "up"},
		{"-n", p.srv, "link", "set", "lo", "up"},
		{"-n", p.cli, "link", "set", cliIf, "up"},
		{"-n", p.cli, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// inNetns runs f on an OS thread that has entered namespace ns. Sockets
// that f opens stay in ns after it returns. If the thread cannot be put
// back, it is not unlocked, so Go ends it instead of reusing it.
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// startServer runs Serve inside the server namespace until the test ends
// (or stop is called), and checks that it then returns nil.
func startServer(t *testing.T, ns string, cfg Config) (stop func()) {
	t.Helper()
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inNetns(ns, func() error { return s.Serve(ctx) }) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Serve did not stop within 10 s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// newClient opens an nclient4 client (raw socket: works on an unconfigured
// interface) in the client namespace.
func newClient(t *testing.T, ns string, hw net.HardwareAddr, timeout time.Duration, retries int) *nclient4.Client {
	t.Helper()
	var c *nclient4.Client
	err := inNetns(ns, func() error {
		var err error
		opts := []nclient4.ClientOpt{nclient4.WithTimeout(timeout), nclient4.WithRetry(retries)}
		if hw != nil {
			opts = append(opts, nclient4.WithHWAddr(hw))
		}
		c, err = nclient4.New(cliIf, opts...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func fullNetnsConfig(leaseFile string) Config {
	cfg := fullConfig()
	cfg.Interface = srvIf
	cfg.LeaseFile = leaseFile
	return cfg
}

func TestNetnsFullDORA(t *testing.T) {
	ns := setupNetns(t)
	leaseFile := filepath.Join(t.TempDir(), "leases.json")
	var logMu sync.Mutex
	var logged []string
	cfg := fullNetnsConfig(leaseFile)
	cfg.Logf = func(f string, a ...any) {
		t.Logf(f, a...)
		logMu.Lock()
		logged = append(logged, fmt.Sprintf(f, a...))
		logMu.Unlock()
	}
	stop := startServer(t, ns.srv, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A plain client: an address and the subnet's options, no boot options.
	plain := newClient(t, ns.cli, nil, time.Second, 5)
	lease, err := plain.Request(ctx)
	if err != nil {
		t.Fatalf("plain DORA: %v", err)
	}
	ack := lease.ACK
	t.Logf("plain client: %s", ack.Summary())
	if !inTestPool(ack.YourIPAddr) || !ack.ServerIdentifier().Equal(testServerIP) || ack.IPAddressLeaseTime(0) != time.Hour {
		t.Errorf("plain ACK: %s", ack.Summary())
	}
	checkBoot(t, kinds()[5], lease.Offer)
	checkBoot(t, kinds()[5], ack)
	// Garbage and a relayed request (now that the server is known to be
	// up): dropped with a log line, and the server goes on serving.
	var raw net.PacketConn
	if err := inNetns(ns.cli, func() error {
		var err error
		raw, err = nclient4.NewRawUDPConn(cliIf, 68)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	relayed := message(t, mac(99), dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.IPv4(10, 77, 0, 9)))
	for _, pkt := range [][]byte{[]byte("not dhcp at all"), make([]byte, 300), relayed.ToBytes()} {
		if _, err := raw.WriteTo(pkt, &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	// PXE and iPXE clients, options 93/60/77 set through modifiers.
	for i, k := range []kind{kinds()[1], kinds()[3], kinds()[0]} {
		c := newClient(t, ns.cli, mac(100+i), time.Second, 5)
		l, err := c.Request(ctx, k.opts...)
		if err != nil {
			t.Fatalf("%s DORA: %v", k.name, err)
		}
		checkInvariants(t, l.Offer, l.Offer) // 60 => 43 on the wire
		checkBoot(t, k, l.Offer)
		checkBoot(t, k, l.ACK)
		if !inTestPool(l.ACK.YourIPAddr) || l.ACK.YourIPAddr.Equal(ack.YourIPAddr) {
			t.Errorf("%s got %v", k.name, l.ACK.YourIPAddr)
		}
	}

	// The PXE clients were served after the bad packets, on the same
	// listener, so those have been logged by now.
	logMu.Lock()
	all := strings.Join(logged, "\n")
	logMu.Unlock()
	if strings.Count(all, "dropping malformed") != 2 || !strings.Contains(all, "relayed requests (giaddr) are not supported") {
		t.Errorf("bad packets not logged as dropped; log:\n%s", all)
	}

	// The lease file follows (written in the background).
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(leaseFile)
		if strings.Contains(string(data), plain.InterfaceAddr().String()) && strings.Contains(string(data), mac(102).String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease file after 5 s:\n%s", data)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Restart from the lease file: the same client gets the same address.
	stop()
	startServer(t, ns.srv, fullNetnsConfig(leaseFile))
	again, err := plain.Request(ctx)
	if err != nil {
		t.Fatalf("DORA after restart: %v", err)
	}
	if !again.ACK.YourIPAddr.Equal(ack.YourIPAddr) {
		t.Errorf("after restart got %v, had %v", again.ACK.YourIPAddr, ack.YourIPAddr)
	}
}

// startDnsmasq runs dnsmasq as the site's plain DHCP server in the server
// namespace. --bind-interfaces makes it set SO_REUSEADDR on port 67, which
// lets our proxy bind the port beside it; --user=root keeps it able to
// write its lease file in the test's temporary directory; --no-ping stops
// it from pinging each new address and waiting up to 3 s before offering
// it, which only slows the test.
func startDnsmasq(t *testing.T, ns string) {
	t.Helper()
	testenv.NeedTool(t, "dnsmasq")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "dnsmasq", "--no-daemon",
		"--conf-file=/dev/null", "--interface="+srvIf, "--bind-interfaces",
		"--dhcp-range=10.77.0.50,10.77.0.90,12h", "--port=0",
		"--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"),
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--user=root", "--no-ping",
		"--log-facility=-", "--log-dhcp")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			t.Logf("dnsmasq: %s", sc.Text())
			if strings.Contains(sc.Text(), "DHCP, IP range") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		<-logDone
	})
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("dnsmasq did not start within 10 s")
	}
}

// Proxy mode beside dnsmasq: the client gets its address from dnsmasq and
// its boot file from us (port 67 proxy offer, then the port 4011 ACK).
func TestNetnsProxyBesideDnsmasq(t *testing.T) {
	ns := setupNetns(t)
	// Our proxy has its own address on the same interface, so that the
	// two servers' identifiers (option 54) differ, as on a real site.
	proxyIP := net.IPv4(10, 77, 0, 2).To4()
	if err := ipCmd("-n", ns.srv, "addr", "add", "10.77.0.2/24", "dev", srvIf); err != nil {
		t.Fatal(err)
	}
	startDnsmasq(t, ns.srv)
	startServer(t, ns.srv, Config{Mode: Proxy, Interface: srvIf, ServerIP: proxyIP, Booter: testBooter})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	pxe := kinds()[1]
	c := newClient(t, ns.cli, nil, 2*time.Second, 3)
	discover, err := dhcpv4.NewDiscovery(c.InterfaceAddr(), pxe.opts...)
	if err != nil {
		t.Fatal(err)
	}
	// Collect offers until we have both the site's and ours.
	var siteOffer, proxyOffer *dhcpv4.DHCPv4
	_, err = c.SendAndRead(ctx, c.RemoteAddr(), discover, func(p *dhcpv4.DHCPv4) bool {
		if p.MessageType() != dhcpv4.MessageTypeOffer {
			return false
		}
		if p.ServerIdentifier().Equal(proxyIP) {
			proxyOffer = p
		} else {
			siteOffer = p
		}
		return siteOffer != nil && proxyOffer != nil
	})
	if err != nil {
		t.Fatalf("waiting for two offers (site %v, proxy %v): %v", siteOffer != nil, proxyOffer != nil, err)
	}
	t.Logf("proxy offer: %s", proxyOffer.Summary())
	if !proxyOffer.YourIPAddr.IsUnspecified() {
		t.Errorf("proxy offer carries address %v", proxyOffer.YourIPAddr)
	}
	checkInvariants(t, discover, proxyOffer)
	checkBoot(t, kind{name: pxe.name, boot: true, vendor: "PXEClient", filename: uefiFile, next: proxyIP}, proxyOffer)
	if siteOffer.YourIPAddr.IsUnspecified() || !siteOffer.ServerIdentifier().Equal(testServerIP) {
		t.Fatalf("site offer: %s", siteOffer.Summary())
	}

	// The address comes from the site server.
	lease, err := c.RequestFromOffer(ctx, siteOffer, pxe.opts...)
	if err != nil {
		t.Fatalf("REQUEST to dnsmasq: %v", err)
	}
	addr, ok := netip.AddrFromSlice(lease.ACK.YourIPAddr.To4())
	if !ok || addr.Compare(netip.MustParseAddr("10.77.0.50")) < 0 || addr.Compare(netip.MustParseAddr("10.77.0.90")) > 0 {
		t.Fatalf("dnsmasq leased %v", lease.ACK.YourIPAddr)
	}

	// The boot server request: REQUEST with ciaddr to our port 4011,
	// answered by unicast to the client's address and source port.
	if err := ipCmd("-n", ns.cli, "addr", "add", addr.String()+"/24", "dev", cliIf); err != nil {
		t.Fatal(err)
	}
	var conn *net.UDPConn
	if err := inNetns(ns.cli, func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: addr.AsSlice(), Port: 68})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bsReq, err := dhcpv4.New(dhcpv4.WithHwAddr(c.InterfaceAddr()), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(addr.AsSlice()), pxe.opts[0], pxe.opts[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDP(bsReq.ToBytes(), &net.UDPAddr{IP: proxyIP, Port: portPXE}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no answer on port 4011: %v", err)
	}
	if !from.IP.Equal(proxyIP) || from.Port != portPXE {
		t.Errorf("4011 answer came from %v, want %v:%d", from, proxyIP, portPXE)
	}
	bsAck, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("4011 ACK: %s", bsAck.Summary())
	if bsAck.MessageType() != dhcpv4.MessageTypeAck || bsAck.TransactionID != bsReq.TransactionID {
		t.Fatalf("4011 answer: %s", bsAck.Summary())
	}
	checkInvariants(t, bsReq, bsAck)
	checkBoot(t, kind{name: "4011", boot: true, vendor: "PXEClient", filename: uefiFile, next: proxyIP}, bsAck)

	// A plain client gets dnsmasq's offer and nothing from us.
	plain := newClient(t, ns.cli, mac(200), 3*time.Second, 1)
	plainDiscover, err := dhcpv4.NewDiscovery(mac(200))
	if err != nil {
		t.Fatal(err)
	}
	var offers []*dhcpv4.DHCPv4
	_, err = plain.SendAndRead(ctx, plain.RemoteAddr(), plainDiscover, func(p *dhcpv4.DHCPv4) bool {
		offers = append(offers, p)
		return false // keep listening for the whole second
	})
	if !errors.Is(err, nclient4.ErrNoResponse) {
		t.Fatalf("plain client: %v", err)
	}
	if len(offers) == 0 {
		t.Fatal("plain client: dnsmasq did not answer")
	}
	for _, o := range offers {
		if o.ServerIdentifier().Equal(proxyIP) {
			t.Errorf("proxy answered a plain client: %s", o.Summary())
		}
	}
}
