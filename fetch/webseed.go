package fetch

import (
	"context"
	"errors"
	"fmt"

	"github.com/imprint-dev/imprint/store"
)

// WebSeeder is a source that serves image torrents' bytes by range, as
// `imprint serve`'s swarm web seed does (store.HTTP).
type WebSeeder interface {
	WebSeed(ctx context.Context, name, version string, off, n int64) ([]byte, error)
}

// ErrNoWebSeed says no source (left) serves the web seed: the caller
// reads whole chunks instead.
var ErrNoWebSeed = errors.New("no source serves the web seed")

// Slice gets n bytes at off of the swarm torrent file of name:version
// (the image's distinct chunks, uncompressed and padded to the chunk
// size) from the sources that serve a web seed, in the same order of
// preference, with the same failover, health and retries as Chunk.
// accept gets each answer, must check it (against the image's piece
// hashes) and takes it by returning nil; what names the bytes in errors.
//
// A source that is no WebSeeder, or that answered "not found" or ignored
// the range once, is remembered and not asked again: when none is left,
// the error is ErrNoWebSeed. Sources are shared with Chunk, so a source
// that failed here is passed over there too, as it should be.
func (f *Fetcher) Slice(ctx context.Context, name, version string, off, n int64, what string, accept func(b []byte) error) error {
	f.mu.Lock()
	var idx []int
	for i, p := range f.peers {
		if _, ok := p.src.(WebSeeder); ok && !p.noSeed {
			idx = append(idx, i)
		}
	}
	f.mu.Unlock()
	if len(idx) == 0 {
		return fmt.Errorf("%s: %w", what, ErrNoWebSeed)
	}
	// A view over the seeding sources alone: ask's rules (and the
	// sources' health, under the same lock) apply to them unchanged.
	sub := &Fetcher{opt: f.opt, mu: f.mu}
	for _, i := range idx {
		sub.peers = append(sub.peers, f.peers[i])
	}
	if f.opt.OnError != nil {
		sub.opt.OnError = func(j int, what string, err error) { f.opt.OnError(idx[j], what, err) }
	}
	get := func(ctx context.Context, src store.Source, _ bool) ([]byte, error) {
		b, err := src.(WebSeeder).WebSeed(ctx, name, version, off, n)
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNoRange) {
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
	f.mu.Lock()
	left := 0
	for _, p := range sub.peers {
		if !p.noSeed {
			left++
		}
	}
	f.mu.Unlock()
	if left == 0 {
		return fmt.Errorf("%w: %w", ErrNoWebSeed, err)
	}
	return err
}
