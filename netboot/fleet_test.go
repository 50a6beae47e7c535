package netboot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/identity"
)

// clock is a settable time for Fleet.Now.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func fakeReq(remote, target string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.RemoteAddr = remote
	return r
}

func byAddr(st Status) map[string]*FleetClient {
	m := map[string]*FleetClient{}
	for _, c := range st.Clients {
		m[c.Addr] = c
	}
	return m
}

func TestFleetRecordsWhatEachClientDid(t *testing.T) {
	ck := &clock{t: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
	f := &Fleet{Now: ck.now}
	sum := strings.Repeat("ab", 32)
	ih := url.QueryEscape(strings.Repeat("\x01", 20))
	// .1 netboots and fetches chunks; .2 fetched and has announced itself
	// complete; .3 got a refusal; .4 was heard from long ago.
	f.Record(fakeReq("10.0.0.1:4000", "/boot.ipxe?mac=AA:BB:CC:DD:EE:01"), 200, 100)
	f.Record(fakeReq("10.0.0.1:4001", "/boot/node/1/vmlinuz"), 200, 5000)
	f.Record(fakeReq("10.0.0.1:4002", "/chunks/ab/"+sum), 200, 1<<20)
	f.Record(fakeReq("10.0.0.1:4003", "/chunks/ab/"+sum), 404, 19) // not here: normal, not a failure
	f.Record(fakeReq("[::ffff:10.0.0.2]:5000", "/images/node/2/manifest.json"), 200, 700)
	f.Record(fakeReq("10.0.0.2:5001", "/swarm/announce?info_hash="+ih+"&port=6881&left=0&downloaded=300&uploaded=40&event=completed"), 200, 50)
	f.Record(fakeReq("10.0.0.3:6000", "/boot/node/1/initrd.img"), 403, 30)
	f.Record(fakeReq("10.0.0.4:7000", "/index.json"), 200, 10)
	ck.t = ck.t.Add(time.Second)
	f.Record(fakeReq("not-an-address", "/index.json"), 200, 10) // ignored

	ck.t = ck.t.Add(ActiveWindow) // .4 quiet since; the others refresh
	f.Record(fakeReq("10.0.0.1:4004", "/chunks/ab/"+sum), 200, 1<<20)

	st := f.Status()
	if len(st.Clients) != 4 {
		t.Fatalf("%d clients, want 4: %+v", len(st.Clients), st.Clients)
	}
	c := byAddr(st)
	one := c["10.0.0.1"]
	if one.MAC != "aa:bb:cc:dd:ee:01" || one.Image != "node" || one.Version != "1" || one.State != StateActive ||
		one.Chunks != 2 || one.Requests != 5 || one.BytesSent != 100+5000+2<<20+19 || one.Errors != 0 {
		t.Errorf("10.0.0.1: %+v", one)
	}
	two := c["10.0.0.2"]
	if two == nil || two.Image != "node" || two.Version != "2" || two.State != StateDone || two.Swarm == nil ||
		two.Swarm.Downloaded != 300 || two.Swarm.Uploaded != 40 || two.Swarm.InfoHash != strings.Repeat("01", 20) {
		t.Errorf("10.0.0.2 (v4-mapped, swarm done): %+v %+v", two, two.Swarm)
	}
	if three := c["10.0.0.3"]; three.State != StateFailed || three.Errors != 1 || !strings.Contains(three.LastError, "403") {
		t.Errorf("10.0.0.3: %+v", three)
	}
	if four := c["10.0.0.4"]; four.State != StateIdle {
		t.Errorf("10.0.0.4: %+v", four)
	}
	// Sorted by image, version, address.
	var order []string
	for _, c := range st.Clients {
		order = append(order, c.Addr)
	}
	if got := strings.Join(order, " "); got != "10.0.0.3 10.0.0.4 10.0.0.1 10.0.0.2" {
		t.Errorf("order %s", got)
	}
	// A later success clears the failure.
	f.Record(fakeReq("10.0.0.3:6001", "/boot/node/1/initrd.img"), 200, 30)
	if three := byAddr(f.Status())["10.0.0.3"]; three.State != StateActive || three.LastError == "" {
		t.Errorf("10.0.0.3 after a success: %+v", three)
	}
}

func TestFleetStaysBounded(t *testing.T) {
	ck := &clock{t: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
	f := &Fleet{Now: ck.now, Max: 3, Forget: time.Hour}
	for _, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"} {
		f.Record(fakeReq(a+":1", "/index.json"), 200, 1)
		ck.t = ck.t.Add(time.Minute)
	}
	c := byAddr(f.Status())
	if len(c) != 3 || c["10.0.0.3"] == nil || c["10.0.0.5"] == nil {
		t.Fatalf("want the 3 most recent, got %v", c)
	}
	ck.t = ck.t.Add(time.Hour - 90*time.Second) // .5 was seen 59.5 min ago, .4 60.5
	if c := byAddr(f.Status()); len(c) != 1 || c["10.0.0.5"] == nil {
		t.Fatalf("after an hour want only 10.0.0.5, got %v", c)
	}
	// The default bound holds under a scan of many addresses.
	g := &Fleet{}
	for i := 0; i < DefaultFleetMax+500; i++ {
		ip := net.IPv4(10, 1, byte(i>>8), byte(i)).String()
		g.Record(fakeReq(ip+":1", "/index.json"), 200, 1)
	}
	if n := len(g.Status().Clients); n != DefaultFleetMax {
		t.Fatalf("%d clients kept, want %d", n, DefaultFleetMax)
	}
}

func TestStatusJSONAndPageShowTheClients(t *testing.T) {
	root, _, data := testStore(t)
	h := &HTTP{Store: root, Public: "http://10.0.0.1:8080/", Decider: Static{Default: Decision{Image: "node", Mode: Diskless}}, Fleet: &Fleet{}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	do := func(path string) (int, []byte) {
		resp, b := get(t, http.MethodGet, srv.URL+path)
		return resp.StatusCode, b
	}
	var sent int64
	for _, p := range []string{"/boot.ipxe?mac=52:54:00:00:00:07", "/images/node/1/manifest.json", "/index.json"} {
		code, b := do(p)
		if code != 200 {
			t.Fatalf("%s: %d %s", p, code, b)
		}
		sent += int64(len(b))
	}
	if code, _ := do("/no/such/thing"); code != 404 {
		t.Fatalf("/no/such/thing: %d", code)
	}
	code, page := do("/")
	if code != 200 || !bytes.Contains(page, []byte("127.0.0.1")) || !bytes.Contains(page, []byte("52:54:00:00:00:07")) || !bytes.Contains(page, []byte(`http-equiv="refresh"`)) {
		t.Fatalf("/: %d\n%s", code, page)
	}
	code, b := do("/status.json")
	if code != 200 {
		t.Fatalf("/status.json: %d %s", code, b)
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	// Only the machine routes count: not the page, the JSON or the 404.
	if len(st.Clients) != 1 {
		t.Fatalf("clients: %s", b)
	}
	c := st.Clients[0]
	if c.Addr != "127.0.0.1" || c.MAC != "52:54:00:00:00:07" || c.Image != "node" || c.Version != "1" || c.Requests != 3 || c.BytesSent != sent || c.State != StateActive {
		t.Fatalf("client: %+v (sent %d)", c, sent)
	}
	_ = data

	// The terminal view of the same.
	st2, err := FetchStatus(context.Background(), nil, srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteStatus(&out, st2); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "node:1") || !strings.Contains(out.String(), "127.0.0.1") || !strings.Contains(out.String(), "52:54:00:00:00:07") {
		t.Fatalf("WriteStatus:\n%s", out.String())
	}
	for _, bad := range []string{"ftp://x/", "not a url", srv.URL + "/no/such/"} {
		if _, err := FetchStatus(context.Background(), nil, bad); !errors.Is(err, ErrStatus) {
			t.Errorf("FetchStatus(%q): %v, want ErrStatus", bad, err)
		}
	}

	// Without a Fleet, / stays what it was: not found.
	h2 := &HTTP{Store: root, Decider: h.Decider}
	for _, p := range []string{"/", "/status.json"} {
		rec := httptest.NewRecorder()
		h2.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != 404 {
			t.Errorf("no fleet: %s answered %d", p, rec.Code)
		}
	}
}

// The fleet names machines from what the server knows of their address:
// the DHCP lease's (or reservation's) MAC, which wins over a /boot.ipxe
// one, and host name as the node name (its first label, as the agent
// takes it); else a name line of the site's identity map for the MAC.
func TestFleetNamesNodesFromLeasesAndIdentity(t *testing.T) {
	idm, err := identity.Parse(strings.NewReader("name mac=52:54:00:00:00:02 node02\nname mac=52:54:00:00:00:03 node03\n"), "identity.conf")
	if err != nil {
		t.Fatal(err)
	}
	hw := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	leases := map[string]struct {
		mac  net.HardwareAddr
		host string
	}{
		"10.0.0.1": {hw("52:54:00:00:00:01"), "rack1-n01.site.example"},
		"10.0.0.3": {hw("52:54:00:00:00:03"), ""},
		"10.0.0.4": {hw("52:54:00:00:00:04"), "-no-node-name"},
		"10.0.0.5": {hw("52:54:00:00:00:05"), ""},
	}
	f := &Fleet{Identity: idm, Leases: func(ip netip.Addr) (net.HardwareAddr, string, bool) {
		l, ok := leases[ip.String()]
		return l.mac, l.host, ok
	}}
	for _, r := range []string{"10.0.0.1:1/index.json", "10.0.0.2:1/boot.ipxe?mac=52:54:00:00:00:02", "10.0.0.3:1/index.json",
		"10.0.0.4:1/index.json", "10.0.0.5:1/boot.ipxe?mac=52:54:00:00:00:99", "10.0.0.6:1/index.json"} {
		remote, path, _ := strings.Cut(r, "/")
		f.Record(fakeReq(remote, "/"+path), 200, 1)
	}
	c := byAddr(f.Status())
	for addr, want := range map[string][2]string{
		"10.0.0.1": {"52:54:00:00:00:01", "rack1-n01"}, // lease host name
		"10.0.0.2": {"52:54:00:00:00:02", "node02"},    // no lease: iPXE's MAC, identity's name
		"10.0.0.3": {"52:54:00:00:00:03", "node03"},    // lease without host name: identity's name
		"10.0.0.4": {"52:54:00:00:00:04", ""},          // a host name that is no node name, no name line
		"10.0.0.5": {"52:54:00:00:00:05", ""},          // the lease's MAC over an older /boot.ipxe one
		"10.0.0.6": {"", ""},                           // nothing known
	} {
		if got := c[addr]; got == nil || got.MAC != want[0] || got.Node != want[1] {
			t.Errorf("%s: %+v, want MAC %q node %q", addr, got, want[0], want[1])
		}
	}
	b, _ := json.Marshal(c["10.0.0.1"])
	if !strings.Contains(string(b), `"node":"rack1-n01"`) {
		t.Errorf("JSON lacks the node name: %s", b)
	}
	var out bytes.Buffer
	if err := WriteStatus(&out, f.Status()); err != nil || !strings.Contains(out.String(), "NODE") || !strings.Contains(out.String(), "rack1-n01") {
		t.Errorf("terminal table: %v\n%s", err, out.String())
	}
}
