package swarm

import (
	"net"
	"sync"
	_ "unsafe" // go:linkname

	"github.com/anacrolix/torrent"
	"github.com/cespare/xxhash/v2"
)

// The engine bans a peer for bad data in two ways: at once when a failed
// piece had all its blocks from that one peer, and by "smart ban" when a
// piece passes, comparing each block peers sent with the good bytes. The
// second needs the engine to hash the piece itself; our storage checks
// pieces against the manifest's SHA-256 (SelfHash), and the engine skips
// smart banning for such storage. So a corrupting peer whose bad blocks
// only ever landed in pieces shared with honest peers was never banned:
// it went on costing every piece it touched a second download (and the
// test that asks for the ban failed under load, when pieces mix more).
// blame is smart banning done here: every block a peer sends is
// remembered by its sender and a 64-bit hash until its piece checks
// good; then a sender whose block differs from the good bytes is banned
// through the engine's own ban (which also drops its connections).

// maxSentPerPiece bounds what one piece remembers while it keeps failing:
// a 4 MiB piece has 256 blocks; beyond a few rounds of them the peers to
// blame have long been seen.
const maxSentPerPiece = 1024

type sentBlock struct {
	begin int64
	n     int
	sum   uint64
	ip    net.IP
}

type blame struct {
	mu   sync.Mutex
	sent map[int][]sentBlock
	ban  func(...net.IP) // nil: nobody to tell (tests of the store alone)
}

// received records a block of piece p from ip; only its part within the
// piece's length counts (padding is checked apart, it must be zeros).
func (b *blame) received(p int, length, begin int64, data []byte, ip net.IP) {
	if ip == nil || begin >= length {
		return
	}
	data = data[:min(int64(len(data)), length-begin)]
	s := sentBlock{begin: begin, n: len(data), sum: xxhash.Sum64(data), ip: ip}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sent == nil {
		b.sent = map[int][]sentBlock{}
	}
	if len(b.sent[p]) < maxSentPerPiece {
		b.sent[p] = append(b.sent[p], s)
	}
}

// passed is told piece p's good bytes: every sender of a block that
// differs from them is banned, and the piece's record is forgotten.
func (b *blame) passed(p int, good []byte) {
	b.mu.Lock()
	sent := b.sent[p]
	delete(b.sent, p)
	b.mu.Unlock()
	var bad []net.IP
	for _, s := range sent {
		if s.begin+int64(s.n) > int64(len(good)) || xxhash.Sum64(good[s.begin:s.begin+int64(s.n)]) != s.sum {
			if !containsIP(bad, s.ip) {
				bad = append(bad, s.ip)
			}
		}
	}
	if len(bad) > 0 && b.ban != nil {
		b.ban(bad...)
	}
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

// peerIP is a peer's address; nil for a web seed, whose address is a
// URL.
func peerIP(p *torrent.Peer) net.IP {
	if p.RemoteAddr == nil {
		return nil
	}
	host, _, err := net.SplitHostPort(p.RemoteAddr.String())
	if err != nil {
		return nil
	}
	return net.ParseIP(host)
}

//go:linkname banPeerIP github.com/anacrolix/torrent.(*Client).banPeerIP
func banPeerIP(*torrent.Client, net.IP)

// banPeers bans ips on cl as the engine's smart ban does: under the
// client's lock, which the hashing goroutine that finds them does not
// hold and must not take (the engine takes the client's lock while
// holding the storage lock that goroutine has).
func banPeers(cl *torrent.Client, ips ...net.IP) {
	go func() {
		clientLock(cl)
		defer clientUnlock(cl)
		for _, ip := range ips {
			// The engine keys bans by the address's byte form, and checks
			// them in both: 16 bytes where it parses text (its own
			// single-peer ban, its dials), 4 where a connection came in on
			// an IPv4 listener. A ban in one form only let the peer
			// connect again in the other.
			banPeerIP(cl, ip.To16())
			if v4 := ip.To4(); v4 != nil {
				banPeerIP(cl, v4)
			}
		}
	}()
}
