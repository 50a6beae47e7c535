package dhcp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// seedPackets are the messages a netboot server really meets, one of each
// type per client kind, as the fuzzer's starting points.
func seedPackets(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	ci := dhcpv4.WithClientIP(net.IPv4(10, 77, 0, 100))
	sid := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP))
	want := dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 100)))
	for i, k := range kinds() {
		m := mac(i)
		seeds[k.name+"-discover"] = discover(t, m, k.opts...).ToBytes()
		for name, extra := range map[string][]dhcpv4.Modifier{
			"request-selecting": {sid, want},
			"request-reboot":    {want},
			"request-renew":     {ci},
		} {
			seeds[k.name+"-"+name] = message(t, m, dhcpv4.MessageTypeRequest, append(extra, k.opts...)...).ToBytes()
		}
		seeds[k.name+"-inform"] = message(t, m, dhcpv4.MessageTypeInform, append([]dhcpv4.Modifier{ci}, k.opts...)...).ToBytes()
	}
	seeds["release"] = message(t, mac(1), dhcpv4.MessageTypeRelease, ci, sid).ToBytes()
	seeds["decline"] = message(t, mac(1), dhcpv4.MessageTypeDecline, want, sid).ToBytes()
	seeds["relayed"] = message(t, mac(1), dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.IPv4(10, 1, 1, 1))).ToBytes()
	seeds["reserved-discover"] = discover(t, mac(7)).ToBytes()
	full := discover(t, mac(2), kinds()[3].opts...).ToBytes()
	seeds["truncated"] = full[:240]
	return seeds
}

func fuzzServers(tb testing.TB) []*Server {
	clk := &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	full := fullConfig()
	full.PoolEnd = net.IPv4(10, 77, 0, 103) // small, so exhaustion is reached
	full.Reservations = []Reservation{{MAC: mac(7), IP: net.IPv4(10, 77, 0, 10), Hostname: "seven"}}
	proxy := proxyConfig()
	var out []*Server
	for _, cfg := range []Config{full, proxy} {
		cfg.Logf = func(string, ...any) {}
		s, err := build(cfg, clk.now)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// FuzzHandle: whatever arrives on the wire, parsing plus Handle never
// panics, and every answer is a well-formed reply that parses back.
func FuzzHandle(f *testing.F) {
	for _, p := range seedPackets(f) {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := dhcpv4.FromBytes(data)
		if err != nil {
			return
		}
		for _, s := range fuzzServers(t) {
			// Each port's rules, and twice, so that the second round
			// meets the state the first one left.
			for _, port := range []int{portAny, portDHCP, portPXE, portAny} {
				r, err := s.handle(req, port)
				if err != nil && r != nil {
					t.Fatalf("both an answer and an error: %v", err)
				}
				if r == nil {
					continue
				}
				if r.OpCode != dhcpv4.OpcodeBootReply || r.TransactionID != req.TransactionID {
					t.Fatalf("answer is no reply to the request: %s", r.Summary())
				}
				back, err := dhcpv4.FromBytes(r.ToBytes())
				if err != nil {
					t.Fatalf("answer does not parse back: %v", err)
				}
				if back.ClassIdentifier() == "PXEClient" && string(back.Options.Get(dhcpv4.OptionVendorSpecificInformation)) != pxeVendorOptions {
					t.Fatalf("PXEClient without option 43")
				}
				if s.mode == Proxy && !back.YourIPAddr.IsUnspecified() {
					t.Fatalf("proxy handed out %v", back.YourIPAddr)
				}
				_ = replyDest(req, r, netip.MustParseAddrPort("10.77.0.9:68"), port)
			}
		}
	})
}

// TestWriteFuzzSeeds writes the seed packets into testdata/fuzz/FuzzHandle
// in `go test fuzz v1` format. Run it with IMPRINT_WRITE_FUZZ_SEEDS=1 after
// changing seedPackets; normally it is skipped.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("IMPRINT_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set IMPRINT_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzHandle/seed-*")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzHandle")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, p := range seedPackets(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", p)
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
