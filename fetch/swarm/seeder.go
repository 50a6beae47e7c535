package swarm

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// Seeder is the imprint server's own seeding peer: every image version it
// is asked to seed joins the swarm on Node, all pieces held, each read
// from the web seed's source (the store's zstd chunks, or a served disk)
// through the web seed's decoder and cache, checked as it is decoded. It
// announces to the server's tracker only (no web seed: it is one). A
// swarm with only a web seed had every node ask the server for the same
// pieces in small slices, so the server's one link was split between all
// of them and no piece completed for long; a peer sends whole pieces per
// request queue, and peers trade what they got from it.
type Seeder struct {
	Node *Node
	// Server is the imprint server's base URL (its tracker).
	Server string
	Seed   *WebSeed

	mu      sync.Mutex
	seeding map[string]*Session // by NAME/VERSION
}

// Offer seeds name:version from now on (once; later calls return nil).
func (sd *Seeder) Offer(ctx context.Context, name, version string) error {
	key := name + "/" + version
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if _, ok := sd.seeding[key]; ok {
		return nil
	}
	res, err := store.Resolve(ctx, sd.Seed.Src, name, version)
	if err != nil {
		return err
	}
	t, err := sd.Seed.torrent(ctx, name, version)
	if err != nil {
		return err
	}
	places := make([]Place, 0, len(res.Manifest.Partitions))
	for _, p := range res.Manifest.Partitions {
		places = append(places, Place{Content: p.Content, Target: storeTarget{ws: sd.Seed, t: t, c: p.Content},
			Have: func(int) bool { return true }})
	}
	s, err := sd.Node.join(res.Manifest, sd.Server, places, false)
	if errors.Is(err, ErrNoPieces) {
		s, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("seed %s:%s: %w", name, version, err)
	}
	if sd.seeding == nil {
		sd.seeding = map[string]*Session{}
	}
	sd.seeding[key] = s
	return nil
}

// Close leaves every swarm and stops the node.
func (sd *Seeder) Close() error {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	for _, s := range sd.seeding {
		if s != nil {
			s.Leave()
		}
	}
	sd.seeding = nil
	return sd.Node.Close()
}

// storeTarget is a content's bytes read from the web seed's source: chunk
// i at i x chunk size, decoded (and checked) by the web seed. Read-only.
type storeTarget struct {
	ws *WebSeed
	t  *Torrent
	c  *image.Content
}

func (s storeTarget) ReadAt(b []byte, off int64) (int, error) {
	cs := s.t.ChunkSize
	n := 0
	for n < len(b) {
		i := int((off + int64(n)) / cs)
		in := (off + int64(n)) % cs
		if i >= len(s.c.Chunks) {
			return n, fmt.Errorf("read at %d: beyond the content's %d chunks", off, len(s.c.Chunks))
		}
		k := min(int64(len(b)-n), cs-in)
		dst := b[n : n+int(k)]
		sum := s.c.Chunks[i]
		var data []byte
		if sum != image.ZeroChunk {
			p, ok := s.t.Index[sum]
			if !ok {
				return n, fmt.Errorf("chunk %s is not in the image's torrent", sum)
			}
			var err error
			// The engine's reads have no context; the source's are local.
			if data, err = s.ws.chunk(context.Background(), s.t, p); err != nil {
				return n, err
			}
		}
		c := 0
		if in < int64(len(data)) {
			c = copy(dst, data[in:])
		}
		clear(dst[c:])
		n += int(k)
	}
	return n, nil
}

func (storeTarget) WriteAt([]byte, int64) (int, error) {
	return 0, errors.New("the server's seeding peer is read-only")
}
