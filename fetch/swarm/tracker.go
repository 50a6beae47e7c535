package swarm

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/anacrolix/dht/v2/krpc"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/tracker"
	httpTracker "github.com/anacrolix/torrent/tracker/http"
)

// Tracker is a BitTorrent HTTP tracker (BEP 3, compact peer lists, BEP 23)
// for the provisioning network: it records and hands out only addresses
// inside Allowed, so a swarm never reaches beyond the server's subnets.
// It keeps peers in memory; a restarted server learns them again at the
// next announce (every Interval).
type Tracker struct {
	// Allowed are the subnets peers may be in (typically the server's
	// own interfaces' subnets, see LocalSubnets).
	Allowed []netip.Prefix
	// Interval is how often peers are asked to announce again [15s]; the
	// engine announces at most once a minute whatever it is told.
	Interval time.Duration
	// Forget is how long a peer not heard from stays in the lists [10m]:
	// the engine announces at its own pace (about every few minutes
	// while it has what it wants), and a gone peer costs a failed dial.
	Forget time.Duration
	// MaxPeers caps one answer's list [50].
	MaxPeers int

	mu     sync.Mutex
	swarms map[[20]byte]map[netip.AddrPort]peerRecord
}

type peerRecord struct {
	seen time.Time
	left int64
}

func (tr *Tracker) interval() time.Duration {
	if tr.Interval > 0 {
		return tr.Interval
	}
	return 15 * time.Second
}

func (tr *Tracker) allowed(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range tr.Allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// LocalSubnets lists the subnets of this machine's interfaces.
func LocalSubnets() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, _ := n.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones).Masked())
	}
	return out, nil
}

// ServeHTTP answers an announce.
func (tr *Tracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fail := func(msg string) {
		// Trackers answer failures in bencode with status 200 (BEP 3).
		b, _ := bencode.Marshal(httpTracker.HttpResponse{FailureReason: msg})
		_, _ = w.Write(b)
	}
	var ih [20]byte
	if s := q.Get("info_hash"); len(s) != 20 {
		fail("info_hash: want 20 bytes")
		return
	} else {
		copy(ih[:], s)
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		fail("cannot tell your address")
		return
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		fail("cannot tell your address")
		return
	}
	ip = ip.Unmap()
	if !tr.allowed(ip) {
		http.Error(w, "announce from outside the provisioning network", http.StatusForbidden)
		return
	}
	port, err := strconv.ParseUint(q.Get("port"), 10, 16)
	if err != nil || port == 0 {
		fail("port: want 1-65535")
		return
	}
	left, _ := strconv.ParseInt(q.Get("left"), 10, 64)
	self := netip.AddrPortFrom(ip, uint16(port))
	now := time.Now()
	maxPeers := tr.MaxPeers
	if maxPeers <= 0 {
		maxPeers = 50
	}
	if n, err := strconv.Atoi(q.Get("numwant")); err == nil && n >= 0 && n < maxPeers {
		maxPeers = n
	}
	var resp httpTracker.HttpResponse
	resp.Interval = int32(tr.interval() / time.Second)
	resp.Peers.Compact = q.Get("compact") != "0"

	forget := tr.Forget
	if forget <= 0 {
		forget = 10 * time.Minute
	}
	tr.mu.Lock()
	if tr.swarms == nil {
		tr.swarms = map[[20]byte]map[netip.AddrPort]peerRecord{}
	}
	sw := tr.swarms[ih]
	if sw == nil {
		sw = map[netip.AddrPort]peerRecord{}
		tr.swarms[ih] = sw
	}
	if q.Get("event") == "stopped" {
		delete(sw, self)
	} else {
		sw[self] = peerRecord{seen: now, left: left}
	}
	for a, p := range sw {
		if now.Sub(p.seen) > forget {
			delete(sw, a)
			continue
		}
		if p.left == 0 {
			resp.Complete++
		} else {
			resp.Incomplete++
		}
		if a == self || len(resp.Peers.List)+len(resp.Peers6) >= maxPeers {
			continue
		}
		if a.Addr().Is4() {
			resp.Peers.List = append(resp.Peers.List, tracker.Peer{IP: a.Addr().AsSlice(), Port: int(a.Port())})
		} else {
			resp.Peers6 = append(resp.Peers6, krpc.NodeAddr{IP: a.Addr().AsSlice(), Port: int(a.Port())})
		}
	}
	tr.mu.Unlock()
	b, err := bencode.Marshal(resp)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write(b)
}

// Peers counts the peers the tracker knows for a torrent.
func (tr *Tracker) Peers(ih [20]byte) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.swarms[ih])
}
