// Package ondemand reads an image's partition chunk by chunk as it is
// read: a chunk is fetched the first time any byte of it is asked for
// (through fetch, so from whichever source has it, peers included),
// checked against the manifest's SHA-256 before a byte of it is given
// out, and kept in a RAM cache bounded in bytes (least recently used
// goes first). All-zero chunks are answered without fetching; readers of
// a chunk being fetched wait for that one fetch. When no source gives a
// chunk, it waits and asks again, saying so, for as long as its context
// lasts: a block device under a mounted root has no better answer than
// "later". The wait is said at once and then every SayEvery, however many
// reads wait and however often they ask, and its end is said too.
//
// With Options.Fill, Fill fetches every chunk the reads have not, one at
// a time and only while no read waits for a fetch, and nothing fetched is
// ever dropped: the partition ends up whole in RAM (its non-zero bytes)
// and survives its sources going away.
//
// With Options.Peers (the image's swarm), a chunk a read misses is asked
// of the peers first and of the sources only when they do not give it
// in a short time; every chunk fetched either way is kept (as with Fill)
// and handed to the peers, which offer it to others for as long as the
// node runs: the swarm never loses a chunk it was told this node has.
//
// With Options.Local (a deployed disk's partition) a chunk is read from
// the disk first and checked the same way; one that drifted is said and
// fetched from the sources, or, with none, its reads fail: the local
// entry's imprint.verify=chunks, a check of every byte as it is read
// instead of a read of the whole partition before the boot.
package ondemand

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/chunkcache"
)

// Options say what to read and how.
type Options struct {
	Content   *image.Content
	ChunkSize int64
	Fetcher   *fetch.Fetcher
	Decoder   *image.Decoder
	// CacheBytes bounds the chunks kept in RAM. A chunk larger than the
	// bound is still fetched and read, just not kept.
	CacheBytes int64
	// Logf hears about waits for sources (and their end); nil: quiet.
	Logf func(format string, args ...any)
	// RetryMin and RetryMax bound the pause between rounds of asking
	// every source again for a chunk none gave [500ms, 2s]: asking a
	// server that is down costs a refused connection, and a root resumes
	// no later than RetryMax after its server is back.
	RetryMin, RetryMax time.Duration
	// SayEvery is how often a wait for the sources is said while it
	// lasts [10s]; its start and its end are said at once.
	SayEvery time.Duration
	// SlowAfter: a fetch with no answer from any source for this long is
	// a wait too, said the same way [5s]. A source gone without a reset
	// (powered off, its link cut) answers nothing until a timeout, and a
	// node whose reads hang needs the news on its console before then.
	SlowAfter time.Duration
	// Fill keeps every chunk fetched (CacheBytes is not a bound then) so
	// that Fill can make the partition whole in RAM.
	Fill bool
	// OnFetch hears about every chunk fetched, or read from Local and
	// checked (index, bytes).
	OnFetch func(i int, n int64)
	// Local, when set, holds the partition as deployed: each chunk is
	// read from it and used when it hashes to the manifest's sum; only
	// a chunk that does not is asked of Fetcher, which may then be nil
	// (such reads fail with image.ErrChecksum).
	Local io.ReaderAt
	// Readahead is how many of the non-zero chunks after one a read
	// misses are fetched before they are asked for (readahead.go); 0: none.
	Readahead int
	// Peers, when set, is asked for a chunk before the Fetcher, and told
	// of every chunk the Fetcher gave. Every chunk is kept then.
	Peers Peers
	// Slices, when set, has a read that misses fetch the signed pieces
	// around it from a web seed rather than its whole chunk (slices.go).
	// A chunk is read whole when no source serves the web seed, when its
	// pieces cannot be had (each answer refused, no answer: then the
	// chunk path's failover and wait apply) and in the modes built on
	// whole chunks: Fill, Local, Peers, Readahead.
	Slices *Slices
}

// ckey is a cache entry's key: a whole chunk (win -1, chunk its index in
// the partition) or one window of a chunk's pieces (chunk its index in
// the torrent: slices.go).
type ckey struct{ chunk, win int }

func whole(i int) ckey { return ckey{i, -1} }

// Peers is an image's swarm as a reader uses it (fetch/swarm's OnDemand).
type Peers interface {
	// Chunk gives chunk sum's bytes, checked against sum, or an error
	// soon: the reader then asks its sources. The bytes are not modified.
	Chunk(ctx context.Context, sum string) ([]byte, error)
	// Have hands over a chunk's checked bytes, to be offered to peers;
	// the reader never modifies them. It returns the bytes the swarm
	// holds for the chunk (data, or a copy a peer gave it meanwhile), for
	// the reader to keep that one rather than a second.
	Have(sum string, data []byte) []byte
}

// Stats count what the reader did.
type Stats struct {
	FetchedBytes  int64 // uncompressed bytes of chunks fetched (and checked)
	FetchedChunks int
	Refetched     int   // chunks fetched again after the cache dropped them
	CachedBytes   int64 // bytes in the cache now
	Hits          int64 // chunk lookups answered by the cache
	ZeroReads     int64 // chunk lookups answered as zeros
	FillBytes     int64 // bytes fetched by Fill (not asked for by a read)
	Waiting       int   // chunks waiting for a source now
	LocalBytes    int64 // bytes of chunks read from Local and checked
	Drifted       int   // chunks of Local that did not check (each counted once)
	LocalErrors   int   // reads of Local that failed (I/O, not drift)
	AheadChunks   int   // chunks fetched by read-ahead
	AheadUsed     int   // of them, chunks a read asked for afterwards
	PeerBytes     int64 // of FetchedBytes, bytes of chunks the peers gave
	PeerChunks    int
	// With Options.Slices: windows of signed pieces fetched from a web
	// seed (their bytes are in FetchedBytes, not in FetchedChunks).
	PieceBytes     int64
	Pieces         int
	PieceRequests  int // range requests that gave them, one a window
	PiecesRefused  int // pieces that did not hash to the image's, each time
	PieceFallbacks int // windows read from a whole chunk as their pieces failed
}

// Reader is the partition, read on demand. Safe for concurrent use.
type Reader struct {
	o Options

	// cache keeps checked chunks by index and runs one fetch per chunk
	// for all the reads that want it.
	cache *chunkcache.Cache[ckey]

	mu   sync.Mutex
	seen map[ckey]bool // chunks and windows fetched at least once
	// drifted holds, by index, why a chunk of Local did not check: it is
	// not read from Local again.
	drifted map[int]error
	st      Stats

	// Reads waiting for a fetch, and a channel closed when they are
	// none: Fill starts a chunk only then.
	demand int
	idle   chan struct{}

	// The wait for sources, said once for all the chunks in it.
	waitStart time.Time
	lastSaid  time.Time

	ra *readahead // nil: none

	sl        *Slices   // nil: whole chunks only
	slicesOff bool      // no source serves the web seed: whole chunks
	seedGone  bool      // every web seed is off for now, and it was said
	lastSlice time.Time // a window's failure was last said then
}

// New makes a Reader over o.Content.
func New(o Options) (*Reader, error) {
	if o.Content == nil || (o.Fetcher == nil && o.Local == nil) || o.Decoder == nil {
		return nil, fmt.Errorf("ondemand: content, decoder and a fetcher or a local partition are required")
	}
	if o.ChunkSize <= 0 {
		return nil, fmt.Errorf("ondemand: chunk size %d", o.ChunkSize)
	}
	if want := (o.Content.Size + o.ChunkSize - 1) / o.ChunkSize; int64(len(o.Content.Chunks)) != want {
		return nil, fmt.Errorf("ondemand: %d chunks for %d bytes of %d, want %d", len(o.Content.Chunks), o.Content.Size, o.ChunkSize, want)
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 500 * time.Millisecond
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(2*time.Second, o.RetryMin)
	}
	if o.SlowAfter <= 0 {
		o.SlowAfter = 5 * time.Second
	}
	if o.SayEvery <= 0 {
		o.SayEvery = 10 * time.Second
	}
	sl := o.Slices
	if o.Fill || o.Local != nil || o.Peers != nil || o.Readahead > 0 || o.Fetcher == nil {
		sl = nil
	}
	if sl != nil {
		if err := sl.check(o.Content, o.ChunkSize); err != nil {
			return nil, err
		}
	}
	idle := make(chan struct{})
	close(idle)
	// With peers every chunk is kept: they were told this node has it.
	cache := chunkcache.New[ckey](chunkcache.Options{MaxBytes: o.CacheBytes, KeepAll: o.Fill || o.Peers != nil})
	return &Reader{o: o, cache: cache, seen: map[ckey]bool{}, drifted: map[int]error{}, idle: idle, ra: newReadahead(o.Readahead), sl: sl}, nil
}

// Size is the partition's size in bytes.
func (r *Reader) Size() int64 { return r.o.Content.Size }

// Stats says what the reader did so far.
func (r *Reader) Stats() Stats {
	cached := r.cache.Bytes()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.CachedBytes = cached
	r.ra.stats(&st)
	return st
}

// ReadAt fills p with the partition's bytes at off.
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > r.o.Content.Size {
		return fmt.Errorf("ondemand: read of %d bytes at %d is outside the partition's %d bytes", len(p), off, r.o.Content.Size)
	}
	cs := r.o.ChunkSize
	for len(p) > 0 {
		i := int(off / cs)
		in := off - int64(i)*cs
		n := min(int64(len(p)), r.o.Content.ChunkLen(i, cs)-in)
		if r.o.Content.Chunks[i] == image.ZeroChunk {
			clear(p[:n])
			r.mu.Lock()
			r.st.ZeroReads++
			r.mu.Unlock()
		} else {
			err := errNoSlice
			if r.sliced(i) {
				err = r.readSlices(ctx, p[:n], i, in)
			}
			if errors.Is(err, errNoSlice) {
				err = r.readWhole(ctx, p[:n], i, in)
			}
			if err != nil {
				return err
			}
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readWhole fills p with chunk i's bytes at in from the whole chunk.
func (r *Reader) readWhole(ctx context.Context, p []byte, i int, in int64) error {
	r.ahead(ctx, i)
	data, err := r.chunk(ctx, i, false)
	if err != nil {
		return err
	}
	copy(p, data[in:])
	return nil
}

// chunk gives chunk i's checked bytes: from the cache, from the fetch
// already running for it, or fetched now. The bytes are never written
// after they are checked, so callers may read them after the cache let
// go of them. fill says the caller is Fill, not a read.
func (r *Reader) chunk(ctx context.Context, i int, fill bool) ([]byte, error) {
	if !fill {
		r.mu.Lock()
		if r.demand == 0 {
			r.idle = make(chan struct{})
		}
		r.demand++
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			if r.demand--; r.demand == 0 {
				close(r.idle)
			}
			r.mu.Unlock()
		}()
	}
	return r.cached(ctx, whole(i), i, !fill, func(ctx context.Context) ([]byte, error) { return r.load(ctx, i, fill) })
}

// cached gives the entry key of chunk i from the cache, from the fetch
// already running for it, or by load now; hits are counted when
// countHit. A fetch started under another caller's context that ended is
// no answer for this caller: it asks again. errNoSlice is a fetch's own
// answer, whatever its source's error wraps (a proxy's "canceled"):
// asking again would be another range request for the same miss.
func (r *Reader) cached(ctx context.Context, key ckey, i int, countHit bool, load func(context.Context) ([]byte, error)) ([]byte, error) {
	for {
		loaded := false
		data, hit, err := r.cache.Get(ctx, key, func(ctx context.Context) ([]byte, error) {
			data, err := load(ctx)
			loaded = err == nil
			return data, err
		})
		if err != nil && ctx.Err() == nil && !errors.Is(err, errNoSlice) && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			continue
		}
		if hit && countHit {
			r.mu.Lock()
			r.st.Hits++
			r.mu.Unlock()
		}
		// Said once the entry is in the cache and its other readers have it.
		if loaded && r.o.OnFetch != nil {
			r.o.OnFetch(i, int64(len(data)))
		}
		return data, err
	}
}

// load gets chunk i, checked: from Local when it holds it intact, else
// from the sources; and counts it. A chunk found drifted on Local is
// remembered: it is said and counted once, and never read from Local
// again (a bounded cache would otherwise re-read and re-hash it, and say
// it again, every time it drops it).
func (r *Reader) load(ctx context.Context, i int, fill bool) (data []byte, err error) {
	local := false
	if r.o.Local != nil {
		r.mu.Lock()
		drift := r.drifted[i]
		r.mu.Unlock()
		if drift != nil {
			err = drift
		} else {
			data, err = r.readLocal(i)
			local = err == nil
			if err != nil {
				r.noteLocal(i, err)
			}
		}
	}
	peer := false
	if !local && r.o.Peers != nil {
		data, err = r.o.Peers.Chunk(ctx, r.o.Content.Chunks[i])
		peer = err == nil
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	if !local && !peer && r.o.Fetcher != nil {
		data, peer, err = r.fetch(ctx, i)
		if err == nil && !peer && r.o.Peers != nil {
			if held := r.o.Peers.Have(r.o.Content.Chunks[i], data); held != nil {
				data = held
			}
		}
	}
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if local {
		r.st.LocalBytes += int64(len(data))
		return data, nil
	}
	if peer {
		r.st.PeerBytes += int64(len(data))
		r.st.PeerChunks++
	}
	r.st.FetchedBytes += int64(len(data))
	r.st.FetchedChunks++
	if fill {
		r.st.FillBytes += int64(len(data))
	}
	if r.seen[whole(i)] {
		r.st.Refetched++
	}
	r.seen[whole(i)] = true
	return data, nil
}

// noteLocal counts and says why chunk i was not taken from Local: a
// drift (image.ErrChecksum) is remembered for good; an I/O error is not
// a drift and is not remembered, as the next read may succeed.
func (r *Reader) noteLocal(i int, err error) {
	then := "fetching it from the sources"
	if r.o.Fetcher == nil {
		then = "no source to fetch it from, its reads fail"
	}
	r.mu.Lock()
	if errors.Is(err, image.ErrChecksum) {
		r.st.Drifted++
		r.drifted[i] = fmt.Errorf("chunk %d: %w", i, err)
	} else {
		r.st.LocalErrors++
	}
	r.mu.Unlock()
	r.logf("chunk %d: %v; %s", i, err, then)
}

// readLocal reads chunk i from Local and checks it.
func (r *Reader) readLocal(i int) ([]byte, error) {
	sum := r.o.Content.Chunks[i]
	b := make([]byte, r.o.Content.ChunkLen(i, r.o.ChunkSize))
	if _, err := r.o.Local.ReadAt(b, int64(i)*r.o.ChunkSize); err != nil {
		return nil, fmt.Errorf("reading it from the local partition: %w", err)
	}
	if got := image.HashBytes(b); got != sum {
		return nil, fmt.Errorf("%w: on the local partition it hashes to %s, the image says %s", image.ErrChecksum, got, sum)
	}
	return b, nil
}

// Fill fetches every non-zero chunk that is not in RAM yet, one at a
// time, starting one only while no read waits for a fetch: reads go
// first, and the sources see at most one request of Fill's at once. It
// needs Options.Fill (else the cache would drop what it fetched) and
// returns when the whole partition is in RAM, or with ctx's error.
func (r *Reader) Fill(ctx context.Context) error {
	if !r.o.Fill {
		return ErrNoFill
	}
	for i, sum := range r.o.Content.Chunks {
		if sum == image.ZeroChunk {
			continue
		}
		for {
			have := r.cache.Has(whole(i))
			r.mu.Lock()
			idle := r.idle
			r.mu.Unlock()
			if have {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-idle:
			}
			// Reads that came in while it waited go first again.
			r.mu.Lock()
			busy := r.demand > 0
			r.mu.Unlock()
			if busy {
				continue
			}
			if _, err := r.chunk(ctx, i, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// ErrNoFill says Fill was called on a Reader made without Options.Fill.
var ErrNoFill = errors.New("ondemand: Fill needs a reader made with Options.Fill")

// fetch gets chunk i from the sources, checked; when none gives it, it
// asks them all again after a pause that doubles up to RetryMax, until
// ctx ends, and the wait is said (see waitFor). Between rounds the peers
// are asked again (peer: they gave it): a server restarting is when the
// swarm matters most, and a peer may have joined, or connected, since
// the read first asked them.
func (r *Reader) fetch(ctx context.Context, i int) (data []byte, peer bool, err error) {
	sum := r.o.Content.Chunks[i]
	n := r.o.Content.ChunkLen(i, r.o.ChunkSize)
	pause := r.o.RetryMin
	waiting := false
	defer func() {
		if waiting {
			r.endWait(fmt.Sprintf("chunk %d", i), ctx.Err() == nil)
		}
	}()
	for {
		stop := r.watch(fmt.Sprintf("chunk %d", i), !waiting)
		err := r.o.Fetcher.Chunk(ctx, sum, n, nil, func(stored []byte) error {
			d, err := r.o.Decoder.Decode(stored, sum, n, nil)
			if err != nil {
				return err
			}
			data = d
			return nil
		})
		if stop() {
			waiting = true
		}
		if err == nil {
			return data, false, nil
		}
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		r.waitFor(i, err, !waiting)
		waiting = true
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, r.o.RetryMax)
		if r.o.Peers != nil {
			if d, err := r.o.Peers.Chunk(ctx, sum); err == nil {
				return d, true, nil
			} else if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
		}
	}
}

// watch says, while a fetch of what runs ("chunk 3", a window of pieces;
// first: it is not a wait yet), that it has had no answer once SlowAfter
// has passed and then every SayEvery: the sources may be busy or cut off,
// and a read hangs meanwhile. stop ends the watch and says whether it started a wait,
// which the caller then ends.
func (r *Reader) watch(what string, first bool) (stop func() bool) {
	done := make(chan struct{})
	begin := time.Now()
	var started bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTimer(r.o.SlowAfter)
		defer t.Stop()
		select {
		case <-done:
			return
		case <-t.C:
		}
		say := func(first bool) {
			if ok, waiting, since := r.noteWait(first, begin); ok {
				r.logf("root source slow: no answer yet for %s after %v (chunks waiting: %d; %v so far); still asking, saying so every %v",
					what, time.Since(begin).Round(time.Second), waiting, since.Round(time.Second), r.o.SayEvery)
			}
		}
		say(first)
		started = first
		tick := time.NewTicker(r.o.SayEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				say(false)
			}
		}
	}()
	return func() bool {
		close(done)
		wg.Wait()
		return started
	}
}

// waitFor notes that chunk i found no source (first: for the first
// time) and says so when a wait starts and every SayEvery while it lasts,
// one line for all the chunks waiting: a root server gone makes every
// read wait, and the console needs the news, not a line per read.
func (r *Reader) waitFor(i int, err error, first bool) {
	say, waiting, since := r.noteWait(first, time.Now())
	if !say {
		return
	}
	who, why := "every source", err.Error()
	var fe *fetch.Error
	if errors.As(err, &fe) && len(fe.Sources) > 0 {
		who = strings.Join(fe.Sources, ", ")
		why = causes(fe.Errs)
	}
	r.logf("root source %s unreachable, waiting (chunk %d; chunks waiting: %d; %v so far; asking again every %v at most, saying so every %v): %s",
		who, i, waiting, since.Round(time.Second), r.o.RetryMax, r.o.SayEvery, why)
}

// noteWait counts a chunk's wait (first: it starts now; a wait starts
// at begin) and says whether it is time to say so: at once, then every
// SayEvery, one line for all the chunks waiting.
func (r *Reader) noteWait(first bool, begin time.Time) (say bool, waiting int, since time.Duration) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if first {
		if r.st.Waiting == 0 {
			r.waitStart, r.lastSaid = begin, time.Time{}
		}
		r.st.Waiting++
	}
	say = now.Sub(r.lastSaid) >= r.o.SayEvery
	if say {
		r.lastSaid = now
	}
	return say, r.st.Waiting, now.Sub(r.waitStart)
}

// causes says why each source failed in a line a console can take: the
// network's own words ("dial tcp 10.0.2.2:8080: connect: connection
// refused") when there are some, not the request's URL again.
func causes(errs []error) string {
	var out []string
	for _, err := range errs {
		if err == nil {
			continue
		}
		var op *net.OpError
		if errors.As(err, &op) {
			out = append(out, op.Error())
		} else {
			out = append(out, err.Error())
		}
	}
	return strings.Join(out, "; ")
}

// endWait notes that what ("chunk 3", a window of pieces) stopped
// waiting (got: fetched, rather than given up with its context, or for
// the whole chunk) and says when the last one did.
func (r *Reader) endWait(what string, got bool) {
	r.mu.Lock()
	r.st.Waiting--
	last, since := r.st.Waiting == 0, time.Since(r.waitStart)
	r.mu.Unlock()
	if last && got {
		r.logf("root source back: %s fetched after waiting %v for the sources; reads go on", what, since.Round(time.Millisecond))
	}
}

func (r *Reader) logf(format string, args ...any) {
	if r.o.Logf != nil {
		r.o.Logf(format, args...)
	}
}
