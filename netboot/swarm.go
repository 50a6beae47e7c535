package netboot

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/store"
)

// serveSwarm answers the swarm routes: /swarm/announce (the tracker) and
// /swarm/data/NAME/VERSION (the web seed: the uncompressed bytes of the
// image's torrent, each chunk decoded and checked before it is sent).
// Under --trust only trusted image versions are seeded.
func (h *HTTP) serveSwarm(w http.ResponseWriter, r *http.Request, parts []string) {
	if h.SwarmTracker == nil {
		http.NotFound(w, r)
		return
	}
	switch {
	case len(parts) == 2 && parts[1] == "announce":
		// Each announce answers with the peers of this moment.
		w.Header().Set("Cache-Control", "no-store")
		h.SwarmTracker.ServeHTTP(w, r)
	case len(parts) == 4 && parts[1] == "data":
		if !h.trusted(w, r, parts[2], parts[3]) {
			return
		}
		h.offerSwarm(r.Context(), parts[2], parts[3])
		if h.swarmSeed == nil {
			http.Error(w, "no store to seed from", http.StatusInternalServerError)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = strings.Join(parts[2:], "/")
		h.swarmSeed.ServeHTTP(w, r2)
	default:
		http.NotFound(w, r)
	}
}

// startSwarm makes the web seed and, with SwarmPeer, the seeding peer
// over the served source, once.
func (h *HTTP) startSwarm() {
	h.swarmOnce.Do(func() {
		src, err := h.source()
		if err != nil {
			h.logf("swarm: %v", err)
			return
		}
		h.swarmSeed = &swarm.WebSeed{Src: src}
		if h.SwarmPeer != nil {
			// The peer reads blocks of many pieces at once, for many
			// nodes: more decoded chunks are kept than the web seed's
			// default, so a chunk is not decoded again for each block.
			h.swarmSeed.CacheChunks = 64
			h.swarmSeeder = &swarm.Seeder{Node: h.SwarmPeer, Server: h.Public, Seed: h.swarmSeed}
		}
	})
}

// offerSwarm has the seeding peer (if any) seed name:version: called when
// a node asks for the version's manifest or web seed data, so the peer is
// in the swarm before the node announces. Trust was checked by the caller.
func (h *HTTP) offerSwarm(ctx context.Context, name, version string) {
	if h.SwarmTracker == nil {
		return
	}
	h.startSwarm()
	if h.swarmSeeder == nil {
		return
	}
	if err := h.swarmSeeder.Offer(ctx, name, version); err != nil && !errors.Is(err, store.ErrNotFound) {
		h.logf("swarm: seeding peer: %v", err)
	}
}

// CloseSwarm stops the seeding peer, if it started.
func (h *HTTP) CloseSwarm() error {
	if h.swarmSeeder != nil {
		return h.swarmSeeder.Close()
	}
	if h.SwarmPeer != nil {
		return h.SwarmPeer.Close()
	}
	return nil
}
