package netboot

import (
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/identity"
)

// Fleet defaults: enough for a few racks, small enough that a scan of
// spoofed or short-lived addresses cannot grow the server without bound.
const (
	DefaultFleetMax    = 1024
	DefaultFleetForget = time.Hour
)

// Fleet remembers what each client address did lately, from what the
// server already sees: the requests it answers (/boot.ipxe carries the MAC,
// /boot, /images and /swarm/data name the image) and the swarm tracker's
// announces (which carry progress). It backs the status page (docs/status.md).
// The zero value is ready; it is safe for concurrent use.
type Fleet struct {
	// Max is how many clients are kept [DefaultFleetMax]; the least
	// recently seen is dropped first.
	Max int
	// Forget drops a client not seen for this long [DefaultFleetForget].
	Forget time.Duration
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
	// Leases, when set, names the machine the DHCP server gave an address
	// to (dhcp.Server.Lookup): its MAC, and its host name as the node's
	// name. Set before the server serves.
	Leases func(netip.Addr) (mac net.HardwareAddr, hostname string, ok bool)
	// Identity, when set, is the site's identity map (serve --identity):
	// its name lines name nodes by MAC when the lease has no host name.
	Identity *identity.Config

	mu      sync.Mutex
	clients map[netip.Addr]*FleetClient
}

// FleetClient is one client address as the status page shows it. Fields
// are documented in docs/status.md; keep them in step.
type FleetClient struct {
	Addr      string     `json:"addr"`
	MAC       string     `json:"mac,omitempty"`
	Node      string     `json:"node,omitempty"`
	Image     string     `json:"image,omitempty"`
	Version   string     `json:"version,omitempty"`
	State     string     `json:"state"`
	Requests  int64      `json:"requests"`
	BytesSent int64      `json:"bytes_sent"`
	Chunks    int64      `json:"chunks"`
	Errors    int64      `json:"errors"`
	LastError string     `json:"last_error,omitempty"`
	LastPath  string     `json:"last_path"`
	FirstSeen time.Time  `json:"first_seen"`
	LastSeen  time.Time  `json:"last_seen"`
	Swarm     *SwarmSeen `json:"swarm,omitempty"`
}

// SwarmSeen is what the client's last announce to the tracker said.
type SwarmSeen struct {
	InfoHash   string `json:"info_hash"`
	Left       int64  `json:"left"`
	Downloaded int64  `json:"downloaded"`
	Uploaded   int64  `json:"uploaded"`
	Event      string `json:"event,omitempty"`
}

// Client states.
const (
	StateActive = "active" // heard from in the last ActiveWindow
	StateIdle   = "idle"   // quiet, neither done nor failed
	StateDone   = "done"   // the swarm announced it complete (left=0)
	StateFailed = "failed" // its last request was refused or failed on the server
)

// ActiveWindow is how recently a client must have been heard from to count
// as active.
const ActiveWindow = 30 * time.Second

// Status is the body of /status.json.
type Status struct {
	Time    time.Time      `json:"time"`
	Clients []*FleetClient `json:"clients"`
}

func (f *Fleet) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

// Record notes one answered request: r as the client sent it, the status
// and the body bytes sent. Requests from addresses it cannot parse are
// ignored.
func (f *Fleet) Record(r *http.Request, status int, sent int64) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return
	}
	ip = ip.Unmap()
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.clients == nil {
		f.clients = map[netip.Addr]*FleetClient{}
	}
	f.expire(now)
	c := f.clients[ip]
	if c == nil {
		f.makeRoom()
		c = &FleetClient{Addr: ip.String(), FirstSeen: now}
		f.clients[ip] = c
	}
	c.LastSeen = now
	c.Requests++
	c.BytesSent += sent
	p := r.URL.Path
	c.LastPath = p
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	switch {
	case p == "/boot.ipxe":
		if mac, err := net.ParseMAC(r.URL.Query().Get("mac")); err == nil {
			c.MAC = strings.ToLower(mac.String())
		}
	case status >= 400:
		// A refused or missing image is not the one the client runs.
	case len(parts) == 4 && (parts[0] == "boot" || parts[0] == "images"):
		c.Image, c.Version = parts[1], parts[2]
	case len(parts) == 4 && parts[0] == "swarm" && parts[1] == "data":
		c.Image, c.Version = parts[2], parts[3]
	case len(parts) == 3 && parts[0] == "chunks":
		c.Chunks++
	case len(parts) == 2 && parts[0] == "swarm" && parts[1] == "announce":
		q := r.URL.Query()
		s := &SwarmSeen{InfoHash: hex.EncodeToString([]byte(q.Get("info_hash"))), Event: q.Get("event")}
		s.Left, _ = strconv.ParseInt(q.Get("left"), 10, 64)
		s.Downloaded, _ = strconv.ParseInt(q.Get("downloaded"), 10, 64)
		s.Uploaded, _ = strconv.ParseInt(q.Get("uploaded"), 10, 64)
		if len(s.InfoHash) > 40 {
			s.InfoHash = s.InfoHash[:40]
		}
		c.Swarm = s
	}
	// 404 and 425 are part of normal work (a source that lacks a chunk,
	// a disk still being written); what else fails is worth showing.
	if status >= 400 && status != http.StatusNotFound && status != http.StatusTooEarly {
		c.Errors++
		c.LastError = strconv.Itoa(status) + " " + http.StatusText(status) + " for " + truncate(p, 120)
		c.State = StateFailed
	} else if status < 400 {
		c.State = ""
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (f *Fleet) forget() time.Duration {
	if f.Forget > 0 {
		return f.Forget
	}
	return DefaultFleetForget
}

// expire drops clients not seen within Forget; f.mu is held.
func (f *Fleet) expire(now time.Time) {
	for a, c := range f.clients {
		if now.Sub(c.LastSeen) > f.forget() {
			delete(f.clients, a)
		}
	}
}

// makeRoom drops least recently seen clients until one more fits; f.mu is
// held. A linear scan: at 1024 entries it costs less than the request.
func (f *Fleet) makeRoom() {
	max := f.Max
	if max <= 0 {
		max = DefaultFleetMax
	}
	for len(f.clients) >= max {
		var oldest netip.Addr
		var t time.Time
		for a, c := range f.clients {
			if t.IsZero() || c.LastSeen.Before(t) {
				oldest, t = a, c.LastSeen
			}
		}
		delete(f.clients, oldest)
	}
}

// Status is a copy of what the fleet knows, sorted by image, version and
// address, each client's state worked out as of now.
func (f *Fleet) Status() Status {
	now := f.now()
	f.mu.Lock()
	f.expire(now)
	out := Status{Time: now, Clients: make([]*FleetClient, 0, len(f.clients))}
	for _, c := range f.clients {
		cp := *c
		if c.Swarm != nil {
			s := *c.Swarm
			cp.Swarm = &s
		}
		out.Clients = append(out.Clients, &cp)
	}
	f.mu.Unlock()
	for _, c := range out.Clients {
		f.identify(c)
		switch {
		case c.State == StateFailed:
		case c.Swarm != nil && c.Swarm.Event != "stopped" && c.Swarm.Left == 0:
			c.State = StateDone
		case now.Sub(c.LastSeen) <= ActiveWindow:
			c.State = StateActive
		default:
			c.State = StateIdle
		}
	}
	sort.Slice(out.Clients, func(i, j int) bool {
		a, b := out.Clients[i], out.Clients[j]
		if a.Image != b.Image {
			return a.Image < b.Image
		}
		if a.Version != b.Version {
			return a.Version < b.Version
		}
		return addrLess(a.Addr, b.Addr)
	})
	return out
}

func addrLess(a, b string) bool {
	x, err1 := netip.ParseAddr(a)
	y, err2 := netip.ParseAddr(b)
	if err1 != nil || err2 != nil {
		return a < b
	}
	return x.Less(y)
}

// identify fills in c's MAC and node name from what the server knows of
// its address: the DHCP lease or reservation (whose MAC wins over one a
// /boot.ipxe request gave: the address may have passed to another
// machine since), then the node's name as the agent works it out
// (identity.NodeName): the lease's host name, else a name line of the
// site's identity map. A node named by neither is left unnamed: its
// fallback name depends on its image and command line, which the server
// does not know.
func (f *Fleet) identify(c *FleetClient) {
	var host string
	if f.Leases != nil {
		if ip, err := netip.ParseAddr(c.Addr); err == nil {
			if mac, h, ok := f.Leases(ip); ok {
				c.MAC, host = strings.ToLower(mac.String()), h
			}
		}
	}
	if n, _, _ := strings.Cut(host, "."); n != "" && identity.ValidNode(n) == nil {
		c.Node = n
		return
	}
	if c.MAC != "" && f.Identity != nil {
		if n, ok := f.Identity.NameFor(map[string][]string{"mac": {c.MAC}}); ok {
			c.Node = n
		}
	}
}
