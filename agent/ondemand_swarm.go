package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
)

// rootSwarm is the on-demand root server's part in the image's swarm
// (imprint.swarm=1): the manifest the agent checked, whose torrent it
// derives, and where to take peers.
type rootSwarm struct {
	Manifest json.RawMessage `json:"manifest"`
	Server   string          `json:"server"`
	Listen   string          `json:"listen"`
	Allowed  []netip.Prefix  `json:"allowed"`
	// MaxPeers is the agent's swarmPeers; 0 is MinSwarmPeers.
	MaxPeers int `json:"max_peers,omitempty"`
}

// ondemandSwarm is the swarm config for an on-demand root of m, or nil
// (said on the console) without imprint.swarm=1 or when the node cannot
// take part: the root then reads from its sources alone.
func (a *Agent) ondemandSwarm(m *image.Manifest, rp *image.Partition) *rootSwarm {
	if !a.Params.Swarm {
		return nil
	}
	// In the swarm the root keeps every chunk it reads, to seed it: a
	// node that reads its whole root holds all of it, plus the swarm's
	// buffers for the pieces under way (a scratch buffer each and a copy
	// to hash; a few at once) and the blocks its peers requested and it
	// has not sent yet (peerBufferWorst each, at worst). One whose RAM
	// could not hold that stays out, bounded by imprint.cache=.
	maxPeers := a.swarmPeers()
	peers := int64(maxPeers) * peerBufferWorst
	need := rp.Content.DataBytes(m.ChunkSize) + swarmPiecesInFlight*2*m.ChunkSize
	total, err := memTotal(a.meminfo())
	if err == nil {
		err = fillFits(need+peers, total)
		if err != nil {
			err = fmt.Errorf("%w (with %d MiB for %d peers' requested blocks at worst; imprint.swarm-peers= lowers it)", err, peers>>20, maxPeers)
		}
	}
	if err != nil {
		a.say("imprint.swarm=1 refused for the on-demand root (it keeps every chunk it reads, to seed them): %v; the root reads from the sources only, its cache bounded", err)
		return nil
	}
	srv := deploy.SwarmServer(a.Params.Sources)
	if srv == "" {
		a.say("imprint.swarm=1: no http(s) imprint.source= to take the tracker from; the root reads from the sources only")
		return nil
	}
	listen, nets, err := a.swarmPlace(srv)
	if err != nil {
		a.say("imprint.swarm=1: %v; the root reads from the sources only", err)
		return nil
	}
	raw, err := json.Marshal(m)
	if err != nil {
		a.say("imprint.swarm=1: %v; the root reads from the sources only", err)
		return nil
	}
	return &rootSwarm{Manifest: raw, Server: srv, Listen: listen, Allowed: nets, MaxPeers: maxPeers}
}

// swarmPiecesInFlight bounds the pieces an on-demand root has under way
// in the swarm at once, for its RAM check: the reads waiting (the kernel
// sends a few NBD requests at once) and read-ahead's.
const swarmPiecesInFlight = 8

// joinRootSwarm puts the root server in the swarm of cfg's image, to read
// content (its root partition) on demand: a chunk a read misses is asked
// of the peers before the sources, and every chunk the node holds is
// kept and offered to peers while the node runs. The node is the root
// server's for as long as it runs; close it to leave (tests do).
func joinRootSwarm(cfg *rootSwarm, content *image.Content) (*swarm.OnDemand, *swarm.Node, error) {
	var m image.Manifest
	if err := json.Unmarshal(cfg.Manifest, &m); err != nil {
		return nil, nil, fmt.Errorf("the manifest: %w", err)
	}
	if len(cfg.Allowed) == 0 {
		return nil, nil, errors.New("the config names no network to take peers from")
	}
	n, err := swarm.NewNode(swarm.Options{Listen: cfg.Listen, AllowedNets: cfg.Allowed, MaxPeers: peersOr(cfg.MaxPeers)})
	if err != nil {
		return nil, nil, err
	}
	d, err := n.JoinOnDemand(&m, content, cfg.Server, swarm.OnDemandOptions{})
	if err != nil {
		n.Close()
		return nil, nil, err
	}
	return d, n, nil
}

// swarmReport says every minute what the root did in the swarm, when it
// changed: it keeps seeding after the boot, when no read fetches.
func swarmReport(ctx context.Context, d *swarm.OnDemand, say func(string, ...any)) {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	var last swarm.OnDemandStats
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cur := d.Stats()
		st := cur
		st.Peers = 0 // a change of peers alone is not news
		if st == last {
			continue
		}
		last = st
		say("%s", swarmLine(cur))
	}
}

// swarmLine is the console's account of the root in the swarm.
func swarmLine(st swarm.OnDemandStats) string {
	return fmt.Sprintf("swarm: %d bytes from peers (%d chunks), %d from the sources; seeding %d bytes, %d sent to peers; %d peers now; %d pieces from peers failed their check",
		st.FromPeers, st.PeerChunks, st.HandedIn, st.Held, st.Uploaded, st.Peers, st.FailedCheck)
}
