package fetch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/store"
)

// WebSeeder is a source that serves image torrents' bytes by range, as
// `imprint serve`'s swarm web seed does (store.HTTP).
type WebSeeder interface {
	WebSeed(ctx context.Context, name, version string, off, n int64) ([]byte, error)
}

var (
	// ErrNoWebSeed says no source serves the web seed: the caller reads
	// whole chunks instead, for good.
	ErrNoWebSeed = errors.New("no source serves the web seed")
	// ErrWebSeedOff says a web seed failed Options.WebSeedOffAfter times
	// in a row and is not asked for WebSeedOffFor; from Slice: every web
	// seed left is off for now.
	ErrWebSeedOff = errors.New("web seed off")
	// ErrNoAnswer says a web seed gave no answer within its time
	// (Options.WebSeedTimeout).
	ErrNoAnswer = errors.New("no answer")
	// ErrWebSeed marks what Slice tells OnError of one web seed's answer
	// (a failure, bytes accept refused), so a caller can say a web
	// seed's apart from a chunk's.
	ErrWebSeed = errors.New("web seed")
)

// Slice gets n bytes at off of the swarm torrent file of name:version
// (the image's distinct chunks, uncompressed and padded to the chunk
// size) from the sources that serve a web seed, in the same order of
// preference. accept gets each answer, must check it (its length, and
// against the image's piece hashes) and takes it by returning nil; what
// names the bytes in errors.
//
// The caller has whole chunks to fall back on, so a web seed is asked
// once per call and the call is bounded in time (Options.WebSeedTimeout
// plus a second a MiB asked, however many seeds are asked), and its
// health is its own: failures here never pass its source over for
// chunks. A source that is no WebSeeder, or that answered "not found" or
// "not allowed", is remembered and not asked again. A seed that failed,
// whose answer accept refused, or that had no answer when another seed's
// was taken, fails; one that fails WebSeedOffAfter calls in a row is not
// asked for WebSeedOffFor, whatever the other seeds do. The error is
// ErrNoWebSeed when no source serves the web seed, ErrWebSeedOff when the
// ones that do are off for now.
func (f *Fetcher) Slice(ctx context.Context, name, version string, off, n int64, what string, accept func(b []byte) error) error {
	now := time.Now()
	// ask's rules choose among the seeds that may be asked, on copies of
	// their state with a lock of their own: its chunk rules (FailLimit,
	// DownFor, Tries) are not a web seed's; what each seed did in this
	// call is noted below and counted here, by the seed's own rules.
	sub := &Fetcher{opt: f.opt, mu: new(sync.Mutex)}
	sub.opt.Tries, sub.opt.Transient, sub.opt.FailLimit = 1, 0, math.MaxInt
	var idx []int
	var seeds []*peer
	f.mu.Lock()
	serving := 0
	for i, p := range f.peers {
		if _, ok := p.src.(WebSeeder); !ok || p.seed.noSeed {
			continue
		}
		serving++
		if !now.Before(p.seed.offUntil) {
			idx = append(idx, i)
			seeds = append(seeds, p.seed)
			c := *p.seed
			c.fails, c.probing, c.downUntil, c.bytes = 0, false, time.Time{}, 0
			c.src = seedOf{p.src, len(sub.peers)}
			sub.peers = append(sub.peers, &c)
		}
	}
	f.mu.Unlock()
	switch {
	case serving == 0:
		return fmt.Errorf("%s: %w", what, ErrNoWebSeed)
	case len(idx) == 0:
		return fmt.Errorf("%s: %w: every web seed failed too often lately", what, ErrWebSeedOff)
	}
	if f.opt.OnError != nil {
		sub.opt.OnError = func(j int, what string, err error) {
			f.opt.OnError(idx[j], what, fmt.Errorf("%w: %w", ErrWebSeed, err))
		}
	}
	timeout := f.opt.WebSeedTimeout + time.Duration(n>>20)*time.Second
	// How each seed did in this call, by its index in sub.peers.
	const (
		notAsked = iota
		cut      // cut short with no answer: another seed's was taken, or the time was up
		fail     // failed, or its answer was refused
		noSeed   // not found, not allowed: for good
		answered // its answer was taken, or came when another's was
	)
	var omu sync.Mutex
	how := make([]int, len(seeds))
	why := make([]error, len(seeds))
	note := func(j, h int, err error) {
		omu.Lock()
		how[j], why[j] = h, err
		omu.Unlock()
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	get := func(rctx context.Context, src store.Source, _ bool) ([]byte, error) {
		start := time.Now()
		s := src.(seedOf)
		b, err := s.Source.(WebSeeder).WebSeed(rctx, name, version, off, n)
		j := s.j
		switch {
		case err == nil:
			note(j, answered, nil)
		case rctx.Err() != nil:
			note(j, cut, fmt.Errorf("%s: no answer in %v", what, time.Since(start).Round(time.Millisecond)))
		case errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNoRange):
			note(j, noSeed, err)
		default:
			note(j, fail, err)
		}
		return b, err
	}
	_, err := ask(actx, sub, what, n, get, func(j int, b []byte) error {
		err := accept(b)
		if err != nil {
			note(j, fail, err)
		}
		return err
	})
	if ctx.Err() != nil {
		// The caller's end says nothing of the seeds.
		return err
	}
	if err != nil && actx.Err() != nil {
		// Not wrapped: a caller reads a deadline as its own end.
		err = fmt.Errorf("%s: %w in %v (%v)", what, ErrNoAnswer, timeout, err)
	}
	var offNow []int
	f.mu.Lock()
	left, on := 0, 0
	for j, p := range seeds {
		c := sub.peers[j]
		if c.gave.After(p.gave) {
			p.gave, p.lastTook = c.gave, c.lastTook
		}
		p.bytes += c.bytes
		if p.asked.IsZero() {
			p.asked = c.asked
		}
		switch how[j] {
		case answered:
			p.fails = 0
		case cut, fail:
			p.fails++
		case noSeed:
			p.noSeed = true
		}
		if p.fails >= f.opt.WebSeedOffAfter {
			p.fails, p.offUntil = 0, time.Now().Add(f.opt.WebSeedOffFor)
			offNow = append(offNow, j)
		}
	}
	for _, p := range f.peers {
		if _, ok := p.src.(WebSeeder); ok && !p.seed.noSeed {
			left++
			if !time.Now().Before(p.seed.offUntil) {
				on++
			}
		}
	}
	f.mu.Unlock()
	offErr := func(err error) error {
		return fmt.Errorf("%w for %v after %d failed range requests in a row: %w", ErrWebSeedOff, f.opt.WebSeedOffFor, f.opt.WebSeedOffAfter, err)
	}
	for _, j := range offNow {
		f.report(idx[j], what, offErr(why[j]))
	}
	switch {
	case err == nil:
		return nil
	case left == 0:
		return fmt.Errorf("%w: %w", ErrNoWebSeed, err)
	case len(offNow) > 0 && on == 0:
		return offErr(err)
	}
	return err
}

// seedOf is a source as Slice's view sees it: with its place in the view
// (sources need not be comparable).
type seedOf struct {
	store.Source
	j int
}
