// Package chunkcache keeps chunks' bytes in RAM, bounded in bytes, and
// loads each one once however many callers ask for it at the same time.
//
// It is the one cache behind the places that serve or read chunks: a
// deployed disk serving its image (ondisk), a root read on demand
// (agent/ondemand) and boot files streamed from chunks (netboot). They
// share its rules:
//
//   - concurrent gets of a key wait for one load (single flight), each
//     for as long as its own context lasts;
//   - a failed load is not kept: the next get loads again;
//   - kept entries are dropped least recently used first while their
//     bytes exceed the bound; an entry larger than the entry bound is
//     handed out but not kept;
//   - an entry held by Acquire is pinned: it is neither dropped nor
//     counted against the bound until it is released, so a chunk being
//     streamed is never held twice;
//   - with KeepAll nothing is ever dropped (a partition filled into RAM).
//
// Values are never copied: callers must not modify the bytes they get.
package chunkcache

import (
	"container/list"
	"context"
	"errors"
	"sync"
)

// Options bound a Cache.
type Options struct {
	// MaxBytes bounds the bytes of the unpinned entries kept.
	MaxBytes int64
	// MaxEntry is the largest entry kept; a larger one is handed out
	// (and shared while pinned) but dropped once nobody holds it. 0 or
	// more than MaxBytes: MaxBytes.
	MaxEntry int64
	// KeepAll keeps every entry loaded: no bound applies.
	KeepAll bool
}

// Cache is a byte-bounded LRU of chunks by key, with single-flight
// loading. Safe for concurrent use.
type Cache[K comparable] struct {
	o Options

	mu      sync.Mutex
	entries map[K]*entry[K] // loaded and loading
	idle    list.List       // of *entry[K], loaded and unpinned, most recent first
	idleLen int64           // bytes in idle
	heldLen int64           // bytes of every loaded entry kept, pinned or not
}

type entry[K comparable] struct {
	key   K
	ready chan struct{} // closed when data, err are set
	done  bool          // ready is closed; guarded by the Cache's mu
	data  []byte
	err   error
	pins  int
	elem  *list.Element // in idle, when loaded and pins == 0
	// waiting counts the gets waiting for the load; guarded by mu. Only
	// tests read it, to know every waiter is in the wait.
	waiting int
}

// ErrLoadPanicked is what the gets waiting for a load get when the load
// panicked (the loader's goroutine goes on panicking).
var ErrLoadPanicked = errors.New("chunkcache: the load panicked")

// New makes a Cache.
func New[K comparable](o Options) *Cache[K] {
	if o.MaxEntry <= 0 || o.MaxEntry > o.MaxBytes {
		o.MaxEntry = o.MaxBytes
	}
	return &Cache[K]{o: o, entries: map[K]*entry[K]{}}
}

// Get returns key's bytes: kept ones (hit is true), those of a load
// already running for key, or those load gives now. load runs in the
// calling goroutine with ctx; other callers of key wait for it, so a load
// that must outlive this caller detaches its own context. A wait ends
// with ctx's error when ctx ends first.
func (c *Cache[K]) Get(ctx context.Context, key K, load func(context.Context) ([]byte, error)) (data []byte, hit bool, err error) {
	e, hit, err := c.get(ctx, key, load, false)
	if err != nil {
		return nil, false, err
	}
	return e.data, hit, nil
}

// Acquire is Get that pins the entry until release is called (once): it is
// not dropped while pinned, however far over the bound the cache is.
func (c *Cache[K]) Acquire(ctx context.Context, key K, load func(context.Context) ([]byte, error)) (data []byte, release func(), err error) {
	e, _, err := c.get(ctx, key, load, true)
	if err != nil {
		return nil, nil, err
	}
	var once sync.Once
	return e.data, func() { once.Do(func() { c.unpin(e) }) }, nil
}

func (c *Cache[K]) get(ctx context.Context, key K, load func(context.Context) ([]byte, error), pin bool) (*entry[K], bool, error) {
	c.mu.Lock()
	if e, ok := c.entries[key]; ok {
		if pin {
			c.pin(e)
		}
		if e.done {
			if e.elem != nil {
				c.idle.MoveToFront(e.elem)
			}
			c.mu.Unlock()
			return e, true, nil
		}
		e.waiting++
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			e.waiting--
			c.mu.Unlock()
		}()
		select {
		case <-e.ready:
		case <-ctx.Done():
			if pin {
				c.unpin(e)
			}
			return nil, false, ctx.Err()
		}
		if e.err != nil {
			if pin {
				c.unpin(e)
			}
			return nil, false, e.err
		}
		return e, false, nil
	}
	e := &entry[K]{key: key, ready: make(chan struct{})}
	if pin {
		e.pins = 1
	}
	c.entries[key] = e
	c.mu.Unlock()

	finished := false
	defer func() {
		if finished {
			return
		}
		// load panicked: its waiters get an error instead of waiting
		// for ever, the next get loads again, and the panic goes on.
		c.mu.Lock()
		e.err, e.done = ErrLoadPanicked, true
		delete(c.entries, key)
		c.mu.Unlock()
		close(e.ready)
	}()
	data, err := load(ctx)
	finished = true

	c.mu.Lock()
	e.data, e.err, e.done = data, err, true
	switch {
	case err != nil:
		// Not remembered: the next get loads again.
		delete(c.entries, key)
	case e.pins > 0:
		c.heldLen += int64(len(data))
	default:
		c.keep(e)
	}
	c.mu.Unlock()
	close(e.ready)
	if err != nil {
		return nil, false, err
	}
	return e, false, nil
}

// pin takes e out of the idle list. Called with mu held.
func (c *Cache[K]) pin(e *entry[K]) {
	if e.elem != nil {
		c.idle.Remove(e.elem)
		e.elem = nil
		c.idleLen -= int64(len(e.data))
	}
	e.pins++
}

func (c *Cache[K]) unpin(e *entry[K]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.pins--
	// A failed entry left the map when it failed; one still loading is
	// kept (or not) by its loader.
	if e.pins > 0 || !e.done || e.err != nil || c.entries[e.key] != e {
		return
	}
	c.heldLen -= int64(len(e.data))
	c.keep(e)
}

// keep puts a loaded, unpinned entry in the idle list, most recent, and
// drops the least recent ones past the bound; one too large to keep
// leaves the map instead. Called with mu held.
func (c *Cache[K]) keep(e *entry[K]) {
	n := int64(len(e.data))
	if !c.o.KeepAll && n > c.o.MaxEntry {
		delete(c.entries, e.key)
		return
	}
	e.elem = c.idle.PushFront(e)
	c.idleLen += n
	c.heldLen += n
	for !c.o.KeepAll && c.idleLen > c.o.MaxBytes {
		old := c.idle.Back().Value.(*entry[K])
		c.idle.Remove(old.elem)
		old.elem = nil
		c.idleLen -= int64(len(old.data))
		c.heldLen -= int64(len(old.data))
		delete(c.entries, old.key)
	}
}

// Has says whether key's bytes are kept now (not loading, not failed).
// It does not count as a use.
func (c *Cache[K]) Has(key K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	return ok && e.done
}

// Bytes is the bytes of the entries kept now, pinned ones included.
func (c *Cache[K]) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heldLen
}
