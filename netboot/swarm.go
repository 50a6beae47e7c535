package netboot

import (
	"net/http"
	"strings"

	"github.com/imprint-dev/imprint/fetch/swarm"
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
		h.swarmOnce.Do(func() {
			src, err := h.source()
			if err != nil {
				h.logf("swarm: %v", err)
				return
			}
			h.swarmSeed = &swarm.WebSeed{Src: src}
		})
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
