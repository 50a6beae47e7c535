package ondemand

import (
	"context"
	"sync"

	"github.com/imprint-dev/imprint/image"
)

// Read-ahead: a boot reads its chunks one page fault after another, and
// each fault waits a whole round trip for its chunk, so the round trip,
// not the bytes, sets the price of an on-demand root. When a read misses
// chunk i right after a read of the chunk before it (a run: a file laid
// out over several chunks), or reads for the first time a chunk fetched
// ahead (the run goes on), the next K non-zero chunks that are neither
// cached nor on their way are fetched at once, in the background.
//
// Off by default (agent.DefaultReadahead): on the Debian root under QEMU
// TCG it made boots slower, because there a chunk costs the guest CPU
// (zstd, SHA-256 without SHA-NI) more than it waits: a window of 8
// fetched 2.3-2.9x the chunks a boot reads and was slower, one of 2
// fetched 1.35x for a gain within the noise. It is for a node whose round
// trip, not its CPU, is the cost (a far server, a loaded link).
//
// Its rules:
//   - at most K fetches of its own at once; a window that finds no free
//     slot is cut short, never waited for;
//   - reads never wait for it: a read of a chunk it is fetching shares
//     that fetch (single flight), any other read fetches at once, whatever
//     read-ahead has in flight;
//   - its chunks go into the same bounded LRU cache as the reads' and the
//     bound holds. They may push out the least recently used chunks, as a
//     read's do: refusing to (read-ahead only into free room) stops it
//     half-way through a Debian boot, which fetches twice the default
//     64 MiB cache. The pages a read used are in the kernel's page cache.
//   - its fetches run under the context of the read that started them:
//     they end with it.
type readahead struct {
	k     int
	slots chan struct{}  // one per fetch in flight
	wg    sync.WaitGroup // the fetches in flight (tests wait for them)

	mu      sync.Mutex
	pending map[int]bool // fetched ahead (or on the way), not read yet
	read    map[int]bool // chunks a read asked for
	fetched int
	used    int
}

// maxGap bounds the zero chunks read-ahead looks across, before and
// after a read: a sparse partition's long holes are no run, and a read
// must not pay a walk over them.
const maxGap = 64

func newReadahead(k int) *readahead {
	if k <= 0 {
		return nil
	}
	return &readahead{k: k, slots: make(chan struct{}, k), pending: map[int]bool{}, read: map[int]bool{}}
}

func (ra *readahead) stats(st *Stats) {
	if ra == nil {
		return
	}
	ra.mu.Lock()
	defer ra.mu.Unlock()
	st.AheadChunks, st.AheadUsed = ra.fetched, ra.used
}

// ahead is told that a read wants chunk i (non-zero), before it gets it,
// and starts the window after i when i is a miss that continues a run or
// a first read of a chunk fetched ahead.
func (r *Reader) ahead(ctx context.Context, i int) {
	ra := r.ra
	if ra == nil {
		return
	}
	chunks := r.o.Content.Chunks
	prev := i - 1
	for prev >= 0 && prev > i-maxGap && chunks[prev] == image.ZeroChunk {
		prev--
	}
	ra.mu.Lock()
	first := ra.pending[i]
	if first {
		delete(ra.pending, i)
		ra.used++
	}
	// A miss starts a window only when it continues a run: the chunk
	// before it was read. A boot's reads are scattered over the root,
	// and a window after each of them fetched nearly every chunk of the
	// Debian root (docs/performance.md, "Read-ahead").
	run := prev >= 0 && ra.read[prev]
	ra.read[i] = true
	ra.mu.Unlock()
	if !first && (!run || r.cache.Has(whole(i))) {
		return
	}
	var want []int
	for j, n := i+1, 0; j < len(chunks) && j <= i+maxGap && n < ra.k; j++ {
		if chunks[j] == image.ZeroChunk {
			continue
		}
		n++
		if !r.cache.Has(whole(j)) {
			want = append(want, j)
		}
	}
	if len(want) == 0 {
		return
	}
	for _, j := range want {
		ra.mu.Lock()
		on := ra.pending[j]
		ra.mu.Unlock()
		if on {
			continue
		}
		select {
		case ra.slots <- struct{}{}:
		default:
			return
		}
		ra.mu.Lock()
		ra.pending[j] = true
		ra.mu.Unlock()
		ra.wg.Add(1)
		go r.fetchAhead(ctx, j)
	}
}

// fetchAhead fetches chunk j into the cache, unless a read did first.
func (r *Reader) fetchAhead(ctx context.Context, j int) {
	ra := r.ra
	defer func() { <-ra.slots; ra.wg.Done() }()
	loaded := false
	data, _, err := r.cache.Get(ctx, whole(j), func(ctx context.Context) ([]byte, error) {
		data, err := r.load(ctx, j, false)
		if loaded = err == nil; loaded {
			// Counted before the readers waiting for it have it.
			ra.mu.Lock()
			ra.fetched++
			ra.mu.Unlock()
		}
		return data, err
	})
	if err != nil || !loaded {
		// Failed, or a read fetched it first: not a chunk read ahead,
		// nor used as one if a read found it pending.
		ra.mu.Lock()
		if ra.pending[j] {
			delete(ra.pending, j)
		} else {
			ra.used--
		}
		ra.mu.Unlock()
	}
	if loaded && r.o.OnFetch != nil {
		r.o.OnFetch(j, int64(len(data)))
	}
}
