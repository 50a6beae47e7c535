package netboot

import (
	"bytes"
	"context"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/identity"
	"github.com/imprint-dev/imprint/internal/testenv"
)

// TestStatusPageInChromium: a real browser renders the status page of a
// running serve after three machines (distinct loopback source addresses)
// fetched from it. IMPRINT_STATUS_PNG=path keeps the screenshot
// (docs/status.png is made so).
func TestStatusPageInChromium(t *testing.T) {
	chromium := testenv.Tool(t, "chromium")
	root, m, _ := testStore(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// 127.0.0.4 has a DHCP lease with a host name; 127.0.0.3 is named by
	// the site's identity map after its MAC.
	idm, err := identity.Parse(strings.NewReader("name mac=52:54:00:12:34:03 node03\n"), "identity.conf")
	if err != nil {
		t.Fatal(err)
	}
	leases := func(ip netip.Addr) (net.HardwareAddr, string, bool) {
		if ip.String() != "127.0.0.4" {
			return nil, "", false
		}
		mac, _ := net.ParseMAC("52:54:00:12:34:04")
		return mac, "rack1-n04.site.example", true
	}
	h := &HTTP{Store: root, Public: "http://" + addr + "/", Decider: Static{Default: Decision{Image: "node", Mode: Diskless}},
		Fleet:        &Fleet{Leases: leases, Identity: idm},
		SwarmTracker: &swarm.Tracker{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}
	s := &Server{HTTP: h, HTTPAddr: addr, IPXEDir: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	base := "http://" + addr
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatal("server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}

	from := func(src string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
	sum := m.Partitions[0].Content.Chunks[0]
	ih := url.QueryEscape(strings.Repeat("\x07", 20))
	clients := map[string][]string{
		"127.0.0.2": {"/boot.ipxe?mac=52:54:00:12:34:02", "/boot/node/1/vmlinuz", "/images/node/1/manifest.json", "/chunks/" + sum[:2] + "/" + sum},
		"127.0.0.3": {"/boot.ipxe?mac=52:54:00:12:34:03", "/images/node/1/manifest.json", "/chunks/" + sum[:2] + "/" + sum,
			"/swarm/announce?info_hash=" + ih + "&port=6881&left=0&downloaded=3145728&uploaded=1048576&event=completed"},
		"127.0.0.4": {"/images/node/1/manifest.json", "/images/node/9/manifest.json", "POST /index.json"},
	}
	for src, paths := range clients {
		c := from(src)
		for _, p := range paths {
			method := http.MethodGet
			if m, rest, ok := strings.Cut(p, " "); ok {
				method, p = m, rest
			}
			req, _ := http.NewRequest(method, base+p, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", src, p, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	run := func(args ...string) []byte {
		t.Helper()
		all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + t.TempDir(), "--window-size=1200,800"}, args...)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, chromium, append(all, base+"/")...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, stderr.Bytes())
		}
		return stdout.Bytes()
	}
	run("--screenshot=" + shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	cfg, err := png.DecodeConfig(f)
	f.Close()
	if err != nil || cfg.Width != 1200 || cfg.Height != 800 {
		t.Fatalf("screenshot: %v, %dx%d, want a 1200x800 PNG", err, cfg.Width, cfg.Height)
	}
	if keep := os.Getenv("IMPRINT_STATUS_PNG"); keep != "" {
		b, _ := os.ReadFile(shot)
		if err := os.WriteFile(keep, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	dom := string(run("--dump-dom"))
	for _, want := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "52:54:00:12:34:02", "node:1", ">done<", ">failed<",
		">52:54:00:12:34:04<", ">rack1-n04<", ">node03<"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q:\n%s", want, dom)
		}
	}
	// The browser itself (127.0.0.1) is a viewer, not a machine.
	if strings.Contains(dom, ">127.0.0.1<") {
		t.Errorf("the viewer is listed as a client:\n%s", dom)
	}
}
