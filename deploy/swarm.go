package deploy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
)

// SwarmOptions make a deploy take its partitions' chunks from the
// image's swarm first (peers, and the server as web seed), written
// straight to their places; whatever the swarm did not give in time
// comes from the sources as before.
type SwarmOptions struct {
	Node *swarm.Node
	// Server is the imprint server's base URL: tracker and web seed.
	Server string
	// Stall ends the swarm phase when no byte of piece data came for this
	// long [30s] (bytes, not whole chunks: on a scarce link many chunks
	// may be under way and none complete for a while).
	Stall time.Duration
	// Keep, when set, gets the session instead of it being left at the
	// end of the write: the caller seeds on with it and leaves it.
	Keep func(*swarm.Session)
}

// SwarmServer is the imprint server whose tracker and web seed a node
// uses when none is named: the first http(s) source, "" if none is.
func SwarmServer(sources []string) string {
	for _, f := range sources {
		if strings.HasPrefix(f, "http://") || strings.HasPrefix(f, "https://") {
			return f
		}
	}
	return ""
}

// Take joins the swarm of m with places and waits until they are whole,
// the swarm stalls (o.Stall) or ctx ends: each chunk is checked against
// m's SHA-256 before Done marks it, and offered to peers at once. Then
// the session goes to o.Keep or is left. An image with nothing to share
// is not an error. warn gets the pieces that did not check, if any.
// Deploy, sync and the agent (install and RAM roots) all fetch through it.
func (o *SwarmOptions) Take(ctx context.Context, m *image.Manifest, places []swarm.Place, warn func(string)) error {
	s, err := o.Node.Join(m, o.Server, places)
	if errors.Is(err, swarm.ErrNoPieces) {
		return nil
	}
	if err != nil {
		return err
	}
	stall := o.Stall
	if stall <= 0 {
		stall = 30 * time.Second
	}
	err = s.Wait(ctx, stall)
	if o.Keep != nil {
		o.Keep(s)
	} else {
		s.Leave()
	}
	if n := s.HeldWrong(); n > 0 && warn != nil {
		warn(fmt.Sprintf("swarm: %d chunks the journal had as written did not read back as the manifest says; fetched again", n))
	}
	if n := s.Failed(); n > 0 && warn != nil {
		warn(fmt.Sprintf("swarm: %d pieces did not check against the manifest and were fetched again; banned: %v", n, o.Node.Banned()))
	}
	return err
}

// fromSwarm takes every partition's missing chunks from the swarm. Each
// chunk is checked against the manifest's SHA-256 before Done marks it
// in the journal; the node offers what it checked to its peers at once.
// It returns the bytes the swarm wrote, and those of chunks copied from
// another place on this disk that held them (a resumed run's chunk that
// occurs at several offsets): written now, not by the swarm.
func (t *Target) fromSwarm(ctx context.Context, o *SwarmOptions, j *journal) (got, copied int64, err error) {
	m, st, dev := t.Image.Manifest, t.State, t.Dev
	var mu sync.Mutex
	var total int64
	var places []swarm.Place
	for _, p := range m.Partitions {
		placed, ok := st.Table.Find(st.PartitionOf(p.Name))
		if !ok {
			return 0, 0, fmt.Errorf("partition %s is not in the disk's table", st.PartitionOf(p.Name))
		}
		bm, c := st.Done[p.Name], p.Content
		total += c.Size
		done := func(n *int64) func(int) {
			return func(i int) {
				bm.Set(i)
				mu.Lock()
				*n += c.ChunkLen(i, m.ChunkSize)
				g := got + copied
				mu.Unlock()
				t.emit(Event{Kind: "progress", Phase: "swarm", Done: g, Total: total})
			}
		}
		places = append(places, swarm.Place{
			Content: c,
			Target:  disk.Section{D: dev, Off: placed.Start, Len: placed.Len},
			Have:    bm.Has,
			Done:    done(&got),
			Copied:  done(&copied),
		})
	}
	t.emit(Event{Kind: "phase", Phase: "swarm", Total: total})
	stop := j.start(ctx)
	err = o.Take(ctx, m, places, func(msg string) { t.emit(Event{Kind: "warning", Message: msg}) })
	if cerr := stop(); err == nil {
		err = cerr
	}
	mu.Lock()
	defer mu.Unlock()
	return got, copied, err
}

// writeLocal writes the chunks local says the copier has on this disk
// (and that are not done yet), journaled, and returns their bytes.
func (t *Target) writeLocal(ctx context.Context, cp *copier.Copier, local func(sum string) bool, j *journal) (int64, error) {
	m, st, dev := t.Image.Manifest, t.State, t.Dev
	var n int64
	for _, p := range m.Partitions {
		placed, ok := st.Table.Find(st.PartitionOf(p.Name))
		if !ok {
			return n, fmt.Errorf("partition %s is not in the disk's table", st.PartitionOf(p.Name))
		}
		bm, c := st.Done[p.Name], p.Content
		var mu sync.Mutex
		t.emit(Event{Kind: "phase", Phase: "local", Partition: p.Name, Total: c.Size})
		stop := j.start(ctx)
		err := cp.Write(ctx, c, target{disk.Section{D: dev, Off: placed.Start, Len: placed.Len}, dev, placed.Start}, copier.Hooks{
			Skip: func(i int) bool { return bm.Has(i) || !local(c.Chunks[i]) },
			Done: func(i int) {
				bm.Set(i)
				mu.Lock()
				n += c.ChunkLen(i, m.ChunkSize)
				mu.Unlock()
			},
		})
		if cerr := stop(); err == nil {
			err = cerr
		}
		if err != nil {
			return n, fmt.Errorf("partition %s: %w", p.Name, err)
		}
	}
	return n, nil
}
