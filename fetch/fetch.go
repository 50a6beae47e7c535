// Package fetch decides which source gives which chunk. Sources (store
// directories, HTTP stores and peers, deployed disks) only fetch and say
// how it went: found, not found, not yet, failed, or bytes that do not
// check. Here they are ordered, asked in parallel when the preferred one
// lags, passed over while they are sick, retried after transient errors,
// and given up on when they stall. Nothing a source sends counts before
// the caller has checked it against the manifest.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// Options tune a Fetcher; zero values take the defaults in brackets.
// Durations are options, not constants, so tests run in milliseconds.
type Options struct {
	// FailLimit consecutive failed requests (connection errors, 5xx)
	// make a source down: it is passed over for DownFor, then one
	// request probes it again [2].
	FailLimit int
	DownFor   time.Duration // [15s]
	// Tries is how often one source is asked for one item after
	// failures; a retry waits Backoff, doubled each time, and only
	// happens when no other source is left to ask [3, 250ms].
	Tries   int
	Backoff time.Duration
	// Transient is how often one item is asked again of a source after a
	// connection failure (a reset, a timeout, a body that stopped) when
	// that source gave another item since the request was made: it is
	// up but saturated, and the failure counts neither against Tries nor
	// its health. The wait doubles from Backoff up to 32 times it [8].
	Transient int
	// Poll is the first pause before a source that answered "not yet"
	// (a peer still deploying) is asked again; it doubles up to PollMax
	// [50ms, 250ms].
	Poll    time.Duration
	PollMax time.Duration
	// A source that gave nothing new for HedgeAfter is not making
	// progress: while it says "not yet", the next source is asked at once
	// instead of waiting for it [2s].
	HedgeAfter time.Duration
	// A source that says "not yet" and gave nothing new for StallAfter
	// is stalled and given up on for that item: the wait is bounded per
	// source, not per chunk [30s].
	StallAfter time.Duration
	// A request in flight to a source that has given no item at all for
	// QuietAfter (to any request) is not waited for alone: the next
	// source is asked too, and the first good answer wins. A source that
	// once gave was trusted until the request's own timeout, so a server
	// gone without a word (powered off, its link cut: no reset comes)
	// held every chunk for the HTTP header timeout (60 s) before another
	// source was asked [10s]. A saturated source still completes items
	// within it; one whose last item took longer gets twice that time (a
	// large chunk over a slow link). With no other source nothing changes.
	// A request cut short this way passes the source over for DownFor.
	QuietAfter time.Duration
	// A web seed (Slice) keeps its own health, apart from its source's
	// chunks: a range request is tried once per source (the caller reads
	// the whole chunk when no piece comes), and a call is cut short when
	// it has no answer WebSeedTimeout plus a second a MiB asked after it
	// began [5s]. WebSeedOffAfter failed range requests in a row (a
	// failure, an answer refused or ignoring the range, no answer when
	// another seed's was taken) turn a source's web seed off for
	// WebSeedOffFor, said once through OnError with ErrWebSeedOff [3, 10m].
	WebSeedTimeout  time.Duration
	WebSeedOffAfter int
	WebSeedOffFor   time.Duration
	// OnError hears about every answer that did not give the item (not
	// counting "not yet" answers still waited for): the source's index,
	// what was asked ("chunk <sha256>", "image name:version") and why.
	OnError func(source int, what string, err error)
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.FailLimit <= 0 {
		o.FailLimit = 2
	}
	if o.Tries <= 0 {
		o.Tries = 3
	}
	if o.Transient <= 0 {
		o.Transient = 8
	}
	def(&o.DownFor, 15*time.Second)
	def(&o.Backoff, 250*time.Millisecond)
	def(&o.Poll, 50*time.Millisecond)
	def(&o.PollMax, 250*time.Millisecond)
	def(&o.HedgeAfter, 2*time.Second)
	def(&o.StallAfter, 30*time.Second)
	def(&o.QuietAfter, 10*time.Second)
	def(&o.WebSeedTimeout, 5*time.Second)
	def(&o.WebSeedOffFor, 10*time.Minute)
	if o.WebSeedOffAfter <= 0 {
		o.WebSeedOffAfter = 3
	}
	return o
}

// Fetcher asks a list of sources, preferred first. It is safe for
// concurrent use; one Fetcher per deploy keeps what it learned about its
// sources (health, progress, bytes) across all chunks.
type Fetcher struct {
	opt   Options
	peers []*peer

	// mu guards every peer's state below its src; a pointer, as the
	// view of Slice over the web seeding sources shares it.
	mu *sync.Mutex
}

type peer struct {
	src  store.Source
	name string

	fails     int           // consecutive failed requests
	downUntil time.Time     // passed over until then, once fails reached FailLimit
	probing   bool          // a request is probing a down source
	asked     time.Time     // first request
	gave      time.Time     // last item taken from it
	lastTook  time.Duration // how long that item's request took
	lagging   bool          // its last answer was "not yet"
	stalled   bool          // stalled, and said so
	bytes     int64

	// seed is the source's web seed (Slice), with its own health: a web
	// seed that fails does not pass the source over for chunks.
	seed     *peer
	noSeed   bool      // (of a seed) none here: not asked again
	offUntil time.Time // (of a seed) failed too often: not asked until then
}

// New makes a Fetcher over srcs, in order of preference.
func New(srcs []store.Source, opt Options) *Fetcher {
	f := &Fetcher{opt: opt.withDefaults(), mu: new(sync.Mutex)}
	for i, s := range srcs {
		name := fmt.Sprintf("source %d", i+1)
		if st, ok := s.(fmt.Stringer); ok {
			name = st.String()
		}
		f.peers = append(f.peers, &peer{src: s, name: name, seed: &peer{src: s, name: name + " (web seed)"}})
	}
	return f
}

// BytesFrom says how many bytes of chunks (uncompressed) each source
// gave, its web seed's included.
func (f *Fetcher) BytesFrom() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]int64, len(f.peers))
	for i, p := range f.peers {
		out[i] = p.bytes + p.seed.bytes
	}
	return out
}

// Chunk gets chunk sum (size bytes uncompressed) from the sources. accept
// gets the stored bytes of each answer, one at a time, and must decompress
// and check them; the first one it takes (returns nil for) ends the fetch.
// stored, when not nil, is a buffer a store directory may read into.
func (f *Fetcher) Chunk(ctx context.Context, sum string, size int64, stored []byte, accept func(stored []byte) error) error {
	get := func(ctx context.Context, src store.Source, useBuf bool) ([]byte, error) {
		// Only a plain store directory reads into the caller's buffer: a
		// wrapper around one may override Chunk.
		if d, ok := src.(*store.Dir); ok && useBuf && stored != nil {
			return d.ReadChunk(ctx, sum, stored)
		}
		return src.Chunk(ctx, sum)
	}
	_, err := ask(ctx, f, "chunk "+sum, size, get, func(_ int, b []byte) error { return accept(b) })
	return err
}

// Resolve fetches and parses name:version from the sources and, under
// trust, checks its signature: a source offering a malformed, forged or
// unsigned manifest is passed over. An empty version is the newest version
// that any source offers (every source's index is read, so a stale mirror
// listed first does not decide), else, when that one cannot be had or is
// not trusted, the next newest.
func (f *Fetcher) Resolve(ctx context.Context, name, version string, trust *image.Trust) (*image.Resolved, error) {
	if err := image.ValidName(name); err != nil {
		return nil, fmt.Errorf("image name: %w", err)
	}
	if version != "" {
		return f.resolve(ctx, name, version, trust)
	}
	versions := f.versions(ctx, name)
	if len(versions) == 0 {
		// No index lists it: each source's own answer says why.
		return f.resolve(ctx, name, "", trust)
	}
	var first error
	for _, v := range versions {
		r, err := f.resolve(ctx, name, v, trust)
		if err == nil {
			return r, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// versions lists the versions of name that the sources' indexes hold,
// newest first; a source whose index cannot be read lists none.
func (f *Fetcher) versions(ctx context.Context, name string) []string {
	type answer struct {
		entries []store.IndexEntry
	}
	ch := make(chan answer, len(f.peers))
	for _, p := range f.peers {
		go func() {
			idx, err := p.src.Index(ctx)
			if err != nil || idx == nil {
				ch <- answer{}
				return
			}
			ch <- answer{idx.Images[name]}
		}()
	}
	seen := map[string]store.IndexEntry{}
	for range f.peers {
		for _, e := range (<-ch).entries {
			if old, ok := seen[e.Version]; !ok || e.Created.After(old.Created) {
				seen[e.Version] = e
			}
		}
	}
	all := make([]store.IndexEntry, 0, len(seen))
	for _, e := range seen {
		all = append(all, e)
	}
	sort.Slice(all, func(i, j int) bool {
		return image.Later(all[i].Created, all[i].Version, all[j].Created, all[j].Version)
	})
	out := make([]string, len(all))
	for i, e := range all {
		out[i] = e.Version
	}
	return out
}

func (f *Fetcher) resolve(ctx context.Context, name, version string, trust *image.Trust) (*image.Resolved, error) {
	what := "image " + name
	if version != "" {
		what += ":" + version
	}
	get := func(ctx context.Context, src store.Source, _ bool) (*image.Resolved, error) {
		return store.Resolve(ctx, src, name, version)
	}
	var res *image.Resolved
	_, err := ask(ctx, f, what, 0, get, func(_ int, r *image.Resolved) error {
		if err := trust.Check(r); err != nil {
			return err
		}
		res = r
		return nil
	})
	return res, err
}

// Error says that no source gave an item, with each source's last answer.
type Error struct {
	What    string
	Sources []string
	Errs    []error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: no source gave it", e.What)
	for i, err := range e.Errs {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%s%s: %v", sep, e.Sources[i], err)
	}
	return b.String()
}

// Unwrap gives the sources' errors, so errors.Is finds their sentinels.
func (e *Error) Unwrap() []error { return e.Errs }

// answer is how a source's answer counts.
type answer int

const (
	found answer = iota
	notFound
	notYet
	failed
	bad
)

func classify(err error) answer {
	switch {
	case err == nil:
		return found
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrNoRange):
		return notFound
	case errors.Is(err, store.ErrNotYet):
		return notYet
	case errors.Is(err, image.ErrChecksum), errors.Is(err, image.ErrFormat):
		return bad
	}
	return failed
}

// transient says err is the connection's failure, not the server's answer:
// one more request may well go through.
func transient(err error) bool {
	var ne net.Error
	return errors.Is(err, store.ErrNoProgress) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || (errors.As(err, &ne) && ne.Timeout())
}

// ErrStalled says a source answered "not yet" for longer than StallAfter
// without giving anything new.
var ErrStalled = errors.New("stalled")

// ErrQuiet says a source that gave before answered nothing for longer
// than its quiet time (Options.QuietAfter) while another source gave.
var ErrQuiet = errors.New("gone quiet")
