package swarm

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/tracker"
)

// The engine announces to a tracker at most once a minute, whatever the
// tracker's interval, and forgets a peer whose dial failed. So a node
// whose first dials failed (a peer not listening yet, a handshake timed
// out on a loaded host), or that announced before the others, waited up
// to a minute for peers while it lacked pieces: the swarm stalled and the
// node went to HTTP (TestTwoSyncsThroughTheSwarm failed so, now and
// then). While it lacks pieces and has fewer peers than it may, the
// session asks the tracker itself, every reannounceEvery, and hands the
// engine the peers it learns (the engine skips those it is connected to,
// and banned or disallowed addresses).
const reannounceEvery = 5 * time.Second

// reannounce runs until the session is closed or has every piece.
func (s *Session) reannounce(cl *torrent.Client, announceURL string, dial func(ctx context.Context, network, addr string) (net.Conn, error), maxPeers int, every time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.t.Closed():
			cancel()
		case <-ctx.Done():
		}
	}()
	self := localAddrs()
	for {
		// ±20 %: a rack that booted together does not announce in step.
		wait := every - every/5 + rand.N(2*every/5+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if s.Missing() == 0 {
			return
		}
		if len(s.t.PeerConns()) >= maxPeers {
			continue
		}
		// The counts the engine would send: the server's fleet page shows
		// each node's progress from its last announce.
		st := s.t.Stats()
		actx, acancel := context.WithTimeout(ctx, every)
		res, err := tracker.Announce{
			TrackerUrl:  announceURL,
			DialContext: dial,
			Context:     actx,
			Request: tracker.AnnounceRequest{
				InfoHash:   s.t.InfoHash(),
				PeerId:     cl.PeerID(),
				Port:       uint16(cl.LocalPort()),
				Left:       s.store.missingBytes(),
				Downloaded: st.BytesReadUsefulData.Int64(),
				Uploaded:   st.BytesWrittenData.Int64(),
				NumWant:    -1,
				Event:      tracker.None,
			},
		}.Do()
		acancel()
		if err != nil {
			continue // the engine's own announces go on; so does this
		}
		var peers []torrent.PeerInfo
		for _, p := range res.Peers {
			if ip, ok := netip.AddrFromSlice(p.IP); ok && p.Port == cl.LocalPort() && self[ip.Unmap()] {
				continue // this node itself
			}
			pi := torrent.PeerInfo{Addr: &net.TCPAddr{IP: p.IP, Port: p.Port}, Source: torrent.PeerSourceTracker}
			copy(pi.Id[:], p.ID)
			peers = append(peers, pi)
		}
		if len(peers) > 0 {
			s.t.AddPeers(peers)
		}
	}
}

// localAddrs are this machine's addresses.
func localAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out[ip.Unmap()] = true
			}
		}
	}
	return out
}
