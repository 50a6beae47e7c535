package fetch

import (
	"context"
	"errors"
	"fmt"
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
)

// Slice gets n bytes at off of the swarm torrent file of name:version
// (the image's distinct chunks, uncompressed and padded to the chunk
// size) from the sources that serve a web seed, in the same order of
// preference. accept gets each answer, must check it (its length, and
// against the image's piece hashes) and takes it by returning nil; what
// names the bytes in errors.
//
// The caller has whole chunks to fall back on, so a web seed is asked
// once per call and for a bounded time (Options.WebSeedTimeout), and its
// health is its own: failures here never pass its source over for
// chunks. A source that is no WebSeeder, or that answered "not found",
// "not allowed" or ignored the range, is remembered and not asked again;
// one that failed WebSeedOffAfter times in a row is not asked for
// WebSeedOffFor. The error is ErrNoWebSeed when no source serves the web
// seed, ErrWebSeedOff when the ones that do are off for now.
func (f *Fetcher) Slice(ctx context.Context, name, version string, off, n int64, what string, accept func(b []byte) error) error {
	now := time.Now()
	// A view over the seeds that may be asked: ask's rules apply to them
	// unchanged, on their own health, under the same lock.
	sub := &Fetcher{opt: f.opt, mu: f.mu}
	sub.opt.Tries, sub.opt.Transient = 1, 0
	var idx []int
	f.mu.Lock()
	seeds := 0
	for i, p := range f.peers {
		if _, ok := p.src.(WebSeeder); !ok || p.seed.noSeed {
			continue
		}
		seeds++
		if !now.Before(p.seed.offUntil) {
			idx = append(idx, i)
			sub.peers = append(sub.peers, p.seed)
		}
	}
	f.mu.Unlock()
	switch {
	case seeds == 0:
		return fmt.Errorf("%s: %w", what, ErrNoWebSeed)
	case len(idx) == 0:
		return fmt.Errorf("%s: %w: every web seed failed too often lately", what, ErrWebSeedOff)
	}
	if f.opt.OnError != nil {
		sub.opt.OnError = func(j int, what string, err error) { f.opt.OnError(idx[j], what, err) }
	}
	timeout := f.opt.WebSeedTimeout + time.Duration(n>>20)*time.Second
	get := func(ctx context.Context, src store.Source, _ bool) ([]byte, error) {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		b, err := src.(WebSeeder).WebSeed(rctx, name, version, off, n)
		switch {
		case err != nil && ctx.Err() == nil && rctx.Err() != nil:
			// Not wrapped: a caller reads a deadline as its own end.
			return nil, fmt.Errorf("%w in %v (%v)", ErrNoAnswer, timeout, err)
		case errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNoRange):
			f.mu.Lock()
			for _, p := range sub.peers {
				if p.src == src {
					p.noSeed = true
				}
			}
			f.mu.Unlock()
		}
		return b, err
	}
	_, err := ask(ctx, sub, what, n, get, func(_ int, b []byte) error { return accept(b) })
	if err == nil || ctx.Err() != nil {
		return err
	}
	var offNow []int
	f.mu.Lock()
	left, on := 0, 0
	for j, p := range sub.peers {
		if p.fails >= f.opt.WebSeedOffAfter {
			p.fails, p.offUntil = 0, time.Now().Add(f.opt.WebSeedOffFor)
			offNow = append(offNow, idx[j])
		}
		if !p.noSeed {
			left++
			if !time.Now().Before(p.offUntil) {
				on++
			}
		}
	}
	f.mu.Unlock()
	offErr := func() error {
		return fmt.Errorf("%w for %v after %d failed range requests in a row: %w", ErrWebSeedOff, f.opt.WebSeedOffFor, f.opt.WebSeedOffAfter, err)
	}
	for _, i := range offNow {
		f.report(i, what, offErr())
	}
	switch {
	case left == 0 && seeds == len(idx):
		return fmt.Errorf("%w: %w", ErrNoWebSeed, err)
	case len(offNow) > 0 && on == 0 && seeds == len(idx):
		return offErr()
	}
	return err
}
