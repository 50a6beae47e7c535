package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/iplist"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"golang.org/x/time/rate"

	"github.com/imprint-dev/imprint/image"
)

// The engine's request limit per connection (localClientReqq, the reqq it
// announces) and the block size it requests pieces in (defaultChunkSize).
const (
	maxPeerRequests = 1024
	blockSize       = 16 << 10
)

// ErrStalled says the swarm gave no chunk for the stall time.
var ErrStalled = errors.New("swarm stalled")

// Options configure a node's part in swarms.
type Options struct {
	// Listen is the address peers connect to (host:port; port 0 picks one).
	// The tracker is announced to from its host, so the server records it.
	Listen string
	// UploadRate and DownloadRate cap this node's peer traffic in bytes
	// per second; 0 is no cap.
	UploadRate   int64
	DownloadRate int64
	// MaxPeers caps the peers this node is connected to per image [50].
	// Each connection may hold up to 16 MiB of requested blocks in RAM
	// (see MaxAllocPeerRequestDataPerConn below), so this bounds that
	// memory: 50 peers, 800 MiB at worst.
	MaxPeers int
	// AllowedNets, when set, are the only networks peers may be in: a
	// connection from, or a peer address (from the tracker) in, any other
	// is refused. A node on a cluster's network has no business with
	// peers elsewhere. The imprint server a swarm is joined with (its
	// tracker) is let through wherever it is.
	AllowedNets []netip.Prefix
	// Log, when set, gets the engine's messages.
	Log *slog.Logger
	// WebSeedAfter is how long a fetching node goes without a byte from
	// its peers before it adds the server's web seed [3s]. The server is
	// a seeding peer itself (Seeder): web seed requests, many 64 KiB
	// slices at once from every node, would split the server's link
	// between all nodes and the same pieces, so that none completes for
	// long and peers have nothing to trade; the web seed is for a node
	// that cannot reach the server's peer port (or an older server).
	WebSeedAfter time.Duration

	// Reannounce is how often a node that lacks pieces and has room for
	// more peers asks the tracker for peers itself [5s] (reannounce.go).
	Reannounce time.Duration

	corrupt bool // tests: serve flipped bytes
}

// Node is this machine's BitTorrent client.
type Node struct {
	cl     *torrent.Client
	opt    Options
	allow  *allowList // nil: any peer
	stores *storeIndex
	// trackerDial dials the tracker from the listening address (nil: the
	// default dialer).
	trackerDial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// storeIndex finds a torrent's storage for the engine's callbacks, which
// name the torrent only.
type storeIndex struct {
	mu sync.Mutex
	m  map[*torrent.Torrent]*pieceStore
}

func (x *storeIndex) get(t *torrent.Torrent) *pieceStore {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.m[t]
}

func (x *storeIndex) set(t *torrent.Torrent, s *pieceStore) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if s == nil {
		delete(x.m, t)
	} else {
		x.m[t] = s
	}
}

// received is the engine's callback for a useful block from a peer.
func (x *storeIndex) received(ev torrent.ReceivedUsefulDataEvent) {
	t := ev.Peer.Torrent()
	s := x.get(t)
	if s == nil {
		return
	}
	m := ev.Message
	p := int(m.Index)
	if p < 0 || p >= s.t.NumPieces() {
		return
	}
	s.blame.received(p, s.t.pieceLen(p), int64(m.Begin), m.Piece, peerIP(ev.Peer))
}

// keepAliveEvery is the engine's keep-alive interval (NewNode: the bound on
// a lost writer wake-up).
const keepAliveEvery = 250 * time.Millisecond

// NewNode starts the client: no DHT, no PEX (private torrents), no uTP,
// no port mapping; peers come from the imprint server's tracker only.
func NewNode(o Options) (*Node, error) {
	useSmallWebseedSlices()
	cfg := torrent.NewDefaultClientConfig()
	cfg.NoDHT = true
	cfg.DisablePEX = true
	cfg.DisableUTP = true
	cfg.DisableWebtorrent = true
	cfg.NoDefaultPortForwarding = true
	cfg.Seed = true
	// The engine's connection writer (v1.59.1) fills its buffer under
	// the client's lock, lets go, and only then takes the signal that
	// new data is ready: a block read for a peer in between is signalled
	// to nobody, and sits until the writer's idle timer, the keep-alive
	// interval (a minute), wakes it. A peer asking for one chunk and
	// nothing else (an on-demand root, the end of a deploy) then waited
	// a minute for blocks that were ready (TestAnOndemandRootSeedsWhatItRead
	// failed 1 run in 28-85 under load). A short interval bounds the lost
	// wake-up; an idle connection that matters sends a 4-byte keep-alive
	// as often, and the read timeout (150 s) does not depend on it.
	cfg.KeepAliveTimeout = keepAliveEvery
	// Every torrent gets its own storage (Join); the default one would
	// keep a piece-completion database in the working directory.
	cfg.DefaultStorage = noStorage{}
	host, port := "", 0
	var peerDialer torrent.Dialer
	if o.Listen != "" {
		h, p, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("swarm listen address %q: %w", o.Listen, err)
		}
		if port, err = strconv.Atoi(p); err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("swarm listen address %q: bad port", o.Listen)
		}
		host = h
	}
	cfg.ListenHost = func(string) string { return host }
	cfg.ListenPort = port
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		// Announce from the listening address, so the tracker hands out
		// the address peers can reach (and bans name the right peer).
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
		cfg.TrackerDialContext = d.DialContext
		cfg.DisableIPv6 = ip.To4() != nil
		cfg.DisableIPv4 = ip.To4() == nil
		// Peer connections too: the engine's own dialer leaves the source
		// address to the kernel, so on a host with several addresses a
		// peer would see (and ban) another one.
		cfg.DialForPeerConns = false
		network := "tcp4"
		if ip.To4() == nil {
			network = "tcp6"
		}
		peerDialer = torrent.NetworkDialer{Network: network, Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}}
	}
	if o.UploadRate > 0 {
		cfg.UploadRateLimiter = rate.NewLimiter(rate.Limit(o.UploadRate), int(max(o.UploadRate, 1<<20)))
	}
	if o.DownloadRate > 0 {
		cfg.DownloadRateLimiter = rate.NewLimiter(rate.Limit(o.DownloadRate), int(max(o.DownloadRate, 1<<20)))
	}
	if o.MaxPeers > 0 {
		cfg.EstablishedConnsPerTorrent = o.MaxPeers
		cfg.HalfOpenConnsPerTorrent = max(o.MaxPeers/2, 1)
	}
	// The engine (v1.59.1) reserves each peer request's bytes against
	// this per-connection budget when the request arrives, then reads the
	// requests one at a time in map order, waiting for each one's
	// reservation; a reservation is given back only once its block is sent.
	// When a peer has more blocks requested than the budget holds (it may
	// have up to 1024 outstanding, the reqq the engine announces; a fast
	// leecher soon has 250+), the reader can wait on a queued request while
	// the granted ones sit unread: the connection deadlocks and uploads
	// nothing more (this was the "31 pieces and no more" stall). A budget
	// of every request the engine accepts (1024 blocks of 16 KiB) cannot be
	// overrun by an engine like this one. It is memory held only while a
	// peer's link is slower than this node's disk.
	cfg.MaxAllocPeerRequestDataPerConn = maxPeerRequests * blockSize
	var allow *allowList
	if len(o.AllowedNets) > 0 {
		// The engine refuses accepted connections and peer addresses its
		// blocklist holds; this one holds everything outside the nets.
		allow = &allowList{nets: o.AllowedNets, servers: map[netip.Addr]bool{}}
		cfg.IPBlocklist = allow
	}
	stores := &storeIndex{m: map[*torrent.Torrent]*pieceStore{}}
	cfg.Callbacks.ReceivedUsefulData = append(cfg.Callbacks.ReceivedUsefulData, stores.received)
	cfg.Slogger = o.Log
	if cfg.Slogger == nil {
		cfg.Slogger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("start swarm client: %w", err)
	}
	if peerDialer != nil {
		cl.AddDialer(peerDialer)
	}
	return &Node{cl: cl, opt: o, allow: allow, stores: stores, trackerDial: cfg.TrackerDialContext}, nil
}

// allowList is an engine blocklist that blocks every address outside its
// networks, except the imprint servers' own: the engine checks a
// tracker's address against the same list before it announces.
type allowList struct {
	nets []netip.Prefix

	mu      sync.Mutex
	servers map[netip.Addr]bool
}

func (a *allowList) Lookup(ip net.IP) (iplist.Range, bool) {
	if addr, ok := netip.AddrFromSlice(ip); ok {
		addr = addr.Unmap()
		for _, p := range a.nets {
			if p.Contains(addr) {
				return iplist.Range{}, false
			}
		}
		a.mu.Lock()
		server := a.servers[addr]
		a.mu.Unlock()
		if server {
			return iplist.Range{}, false
		}
	}
	return iplist.Range{First: ip, Last: ip, Description: "outside the swarm's networks"}, true
}

// NumRanges is the engine's count of ranges; only its statistics read it.
func (a *allowList) NumRanges() int { return len(a.nets) }

// allowServer lets the engine reach the imprint server at base (its
// tracker) wherever it is.
func (a *allowList) allowServer(base string) error {
	u, err := url.Parse(base)
	if err != nil {
		return fmt.Errorf("swarm server %q: %w", base, err)
	}
	host := u.Hostname()
	addrs := []netip.Addr{}
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = append(addrs, ip)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
			return fmt.Errorf("swarm server %q: %w", base, err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ip := range addrs {
		a.servers[ip.Unmap()] = true
	}
	return nil
}

// Addr is where peers reach this node.
func (n *Node) Addr() net.Addr {
	ls := n.cl.ListenAddrs()
	if len(ls) == 0 {
		return nil
	}
	return ls[0]
}

// Close stops the client and every swarm it is in.
func (n *Node) Close() error {
	errs := n.cl.Close()
	return errors.Join(errs...)
}

// URLs of an imprint server's swarm routes, below its base URL.
func AnnounceURL(server string) string { return joinURL(server, "swarm/announce") }

// WebSeedURL is where the server serves the bytes of name:version.
func WebSeedURL(server, name, version string) string {
	return joinURL(server, "swarm/data/"+url.PathEscape(name)+"/"+url.PathEscape(version))
}

func joinURL(base, rel string) string {
	if len(base) > 0 && base[len(base)-1] == '/' {
		return base + rel
	}
	return base + "/" + rel
}

// Session is this node in the swarm of one image version.
type Session struct {
	t     *torrent.Torrent
	store *pieceStore
	Tor   *Torrent
}

// Join enters the swarm of the image m (derived from the manifest, see
// FromManifest) with the server's tracker and web seed, and starts taking
// the chunks of places this node lacks; what it holds and has checked is
// offered to peers at once. server is the imprint server's base URL.
func (n *Node) Join(m *image.Manifest, server string, places []Place) (*Session, error) {
	return n.join(m, server, places, true)
}

// join is Join; without webSeed the server is only the tracker (the
// server's own seeding peer).
func (n *Node) join(m *image.Manifest, server string, places []Place, webSeed bool) (*Session, error) {
	tor, err := FromManifest(m)
	if err != nil {
		return nil, err
	}
	st, err := newPieceStore(tor, places)
	if err != nil {
		return nil, err
	}
	s, err := n.add(m, tor, st, server)
	if err != nil {
		return nil, err
	}
	t := s.t
	// Random first pieces (BitTorrent's "random first piece"): the
	// engine takes pieces by priority, then rarity, then index, so every
	// node that starts with only the server to take from would ask it for
	// the same pieces in the same order, and the nodes would have nothing
	// to trade. A random half of each node's chunks goes first, all the
	// pieces of a chunk together, so that chunks complete (and are
	// written to all their places) as they come.
	for k := range st.cs {
		if !st.needs(k) {
			continue
		}
		prio := torrent.PiecePriorityNormal
		if rand.IntN(2) == 0 {
			prio = torrent.PiecePriorityHigh
		}
		first, end := tor.pieces(k)
		for p := first; p < end; p++ {
			if !st.ps[p].complete.Load() {
				t.Piece(p).SetPriority(prio)
			}
		}
	}
	if server != "" && st.missing() > 0 {
		n.startReannounce(s, server)
	}
	if server != "" && webSeed && st.missing() > 0 {
		after := n.opt.WebSeedAfter
		if after <= 0 {
			after = 3 * time.Second
		}
		go s.webSeedWhenIdle(n.cl, WebSeedURL(server, m.Name, m.Version), after)
	}
	return s, nil
}

// add puts tor, stored in st, in the node's engine with the server's
// tracker (none without a server), and waits for the engine to take its
// info: the part Join and JoinOnDemand share.
func (n *Node) add(m *image.Manifest, tor *Torrent, st *pieceStore, server string) (*Session, error) {
	if n.allow != nil && server != "" {
		if err := n.allow.allowServer(server); err != nil {
			return nil, err
		}
	}
	st.corrupt = n.opt.corrupt
	var added *torrent.Torrent
	addedSet := make(chan struct{})
	st.recheck = func(pieces []int) {
		// Called with the engine's locks held: the engine is told later.
		// It may still record a piece complete after being told (it does
		// so under its lock once MarkComplete returns), so it is told
		// until its view agrees with the store's, for a few seconds.
		go func() {
			<-addedSet
			for range 30 {
				for _, p := range pieces {
					added.Piece(p).UpdateCompletion()
				}
				time.Sleep(100 * time.Millisecond)
				if !slices.ContainsFunc(pieces, func(p int) bool {
					return added.Piece(p).State().Complete != st.ps[p].complete.Load()
				}) {
					return
				}
			}
		}()
	}
	st.blame.ban = func(ips ...net.IP) { banPeers(n.cl, ips...) }
	t, isNew := n.cl.AddTorrentOpt(torrent.AddTorrentOpts{
		InfoHash:  tor.Hash,
		InfoBytes: tor.InfoBytes,
		Storage:   st,
		// Completion comes from the store's places (Have), checked by
		// their owners.
		DisableInitialPieceCheck: true,
	})
	if !isNew {
		return nil, fmt.Errorf("image %s:%s: already in this node's swarms", m.Name, m.Version)
	}
	added = t
	close(addedSet)
	n.stores.set(t, st)
	go func() {
		<-t.Closed()
		n.stores.set(t, nil)
	}()
	s := &Session{t: t, store: st, Tor: tor}
	if server != "" {
		t.AddTrackers([][]string{{AnnounceURL(server)}})
	}
	<-t.GotInfo()
	return s, nil
}

// startReannounce has s ask the server's tracker for peers itself while
// it lacks pieces (reannounce.go).
func (n *Node) startReannounce(s *Session, server string) {
	every := n.opt.Reannounce
	if every <= 0 {
		every = reannounceEvery
	}
	maxPeers := n.opt.MaxPeers
	if maxPeers <= 0 {
		maxPeers = 50 // the engine's EstablishedConnsPerTorrent
	}
	go s.reannounce(n.cl, AnnounceURL(server), n.trackerDial, maxPeers, every)
}

// webSeedWhenIdle adds the web seed at url once the peers have given no
// byte for after (from the start, or since their last), unless the
// session is done or left first.
func (s *Session) webSeedWhenIdle(cl *torrent.Client, url string, after time.Duration) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last int64
	since := time.Now()
	for {
		select {
		case <-s.t.Closed():
			return
		case <-tick.C:
		}
		if s.Missing() == 0 {
			return
		}
		if p, _ := s.Stats(); p > last {
			last, since = p, time.Now()
			continue
		}
		if time.Since(since) >= after {
			s.t.AddWebSeeds([]string{url})
			kickWebSeeds(cl)
			return
		}
	}
}

// Missing counts the chunks this node still lacks.
func (s *Session) Missing() int { return s.store.missing() }

// Failed counts pieces that did not check (a corrupting peer or web seed).
func (s *Session) Failed() int64 { return s.store.failed.Load() }

// HeldWrong counts the chunks a place said it held (a deploy's journal)
// that could not be read or did not check: fetched again.
func (s *Session) HeldWrong() int64 { return s.store.heldWrong.Load() }

// Stats are the bytes of useful piece data taken from peers and from web
// seeds.
func (s *Session) Stats() (fromPeers, fromSeeds int64) {
	st := s.t.Stats()
	useful := st.BytesReadUsefulData.Int64()
	seeds := int64(0)
	for _, pc := range s.t.WebseedPeerConns() {
		ps := pc.Stats()
		seeds += ps.BytesReadUsefulData.Int64()
	}
	return useful - seeds, seeds
}

// Wait returns once every piece of the places is checked and written, or
// with ErrStalled when no byte of piece data came for stall (bytes, not
// pieces: on a scarce link many pieces may be under way at once and none
// complete for a while, yet the swarm is working), or the context's error.
func (s *Session) Wait(ctx context.Context, stall time.Duration) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	var last int64
	since := start
	for {
		m := s.Missing()
		if m == 0 {
			return nil
		}
		now := time.Now()
		st := s.t.Stats()
		if b := st.BytesReadData.Int64(); b > last {
			last, since = b, now
		}
		if stall > 0 && now.Sub(since) > stall {
			return fmt.Errorf("%w: %d of %d chunks missing, no data for %v", ErrStalled, m, len(s.Tor.Chunks), stall)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Leave drops the torrent: the node stops serving it.
func (s *Session) Leave() { s.t.Drop() }

// Banned lists the peer addresses the node banned (for failed pieces).
func (n *Node) Banned() []string { return n.cl.BadPeerIPs() }

// noStorage is the client's default storage: never used, since every
// torrent is added with its own.
type noStorage struct{}

func (noStorage) OpenTorrent(context.Context, *metainfo.Info, metainfo.Hash) (storage.TorrentImpl, error) {
	return storage.TorrentImpl{}, errors.New("swarm: a torrent without imprint's storage")
}
