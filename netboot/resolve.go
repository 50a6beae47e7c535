package netboot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// ResolveTTL is how long a resolved "newest" version, and any manifest of
// a source that is not a store directory, is used before it is looked up
// again. Named versions in a store directory are kept while their files
// and the store's index are unchanged.
const ResolveTTL = 5 * time.Second

type resolvedEntry struct {
	res   *image.Resolved
	stamp string
	at    time.Time
}

// stamp identifies the state of the store files a resolution depends on:
// index.json (rewritten by every build), the image's directory (a version
// copied in by hand), and for a named version its manifest and signature.
// "" for sources that are not a store directory.
func (h *HTTP) stamp(name, version string) string {
	if h.Disk != nil {
		return ""
	}
	paths := []string{filepath.Join(h.Store, "index.json"), filepath.Join(h.Store, "images", name)}
	if version != "" {
		m := filepath.Join(h.Store, "images", name, version, "manifest.json")
		paths = append(paths, m, m+image.SignatureSuffix)
	}
	var b strings.Builder
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			b.WriteString("-;")
			continue
		}
		fmt.Fprintf(&b, "%d.%d.%v;", st.Size(), st.ModTime().UnixNano(), st.Mode())
	}
	return b.String()
}

// resolve is store.Resolve with a cache and, under h.Trust, only trusted
// versions: an explicit version that is not trusted is an error wrapping
// image.ErrUntrusted; "newest" is the newest trusted version, so an
// unsigned build added to the store does not stop the fleet.
func (h *HTTP) resolve(ctx context.Context, src store.Source, name, version string) (*image.Resolved, error) {
	if err := image.ValidName(name); err != nil {
		return nil, fmt.Errorf("image name: %w", err)
	}
	if version != "" {
		res, err := h.resolveVersion(ctx, src, name, version)
		if err != nil {
			return nil, err
		}
		if err := h.Trust.Check(res); err != nil {
			return nil, err
		}
		return res, nil
	}
	if pin, ok := h.Pins[name]; ok {
		res, err := h.resolveVersion(ctx, src, name, pin)
		if err != nil {
			return nil, fmt.Errorf("image %s pinned to version %s: %w", name, pin, err)
		}
		if err := h.Trust.Check(res); err != nil {
			return nil, fmt.Errorf("image %s pinned to version %s: %w", name, pin, err)
		}
		return res, nil
	}
	key := name + ":"
	st := h.stamp(name, "")
	if res, ok := h.cached(key, st, true); ok {
		return res, nil
	}
	idx, err := src.Index(ctx)
	if err != nil {
		return nil, err
	}
	vs := append([]store.IndexEntry(nil), idx.Images[name]...)
	if len(vs) == 0 {
		return nil, fmt.Errorf("image %q: %w in the store", name, store.ErrNotFound)
	}
	// Newest first, in the order store.Index.Latest uses.
	sort.Slice(vs, func(i, j int) bool {
		return image.Later(vs[i].Created, vs[i].Version, vs[j].Created, vs[j].Version)
	})
	var first error
	for _, e := range vs {
		res, err := h.resolveVersion(ctx, src, name, e.Version)
		if err == nil {
			err = h.Trust.Check(res)
		}
		if err == nil {
			h.remember(key, st, res)
			return res, nil
		}
		if h.Trust == nil {
			return nil, err
		}
		if first == nil {
			first = err
		}
		h.logf("http: image %s:%s passed over: %v", name, e.Version, err)
	}
	return nil, fmt.Errorf("image %q: none of its %d versions is signed by a trusted key (newest: %w)", name, len(vs), first)
}

// resolveVersion resolves one named version, from the cache while its
// files are unchanged. Trust is not checked here.
func (h *HTTP) resolveVersion(ctx context.Context, src store.Source, name, version string) (*image.Resolved, error) {
	key := name + ":" + version
	st := h.stamp(name, version)
	if res, ok := h.cached(key, st, h.Disk != nil); ok {
		return res, nil
	}
	res, err := store.Resolve(ctx, src, name, version)
	if err != nil {
		return nil, err
	}
	h.remember(key, st, res)
	return res, nil
}

func (h *HTTP) cached(key, stamp string, ttl bool) (*image.Resolved, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.resolved[key]
	if !ok || e.stamp != stamp || (ttl && time.Since(e.at) > ResolveTTL) {
		return nil, false
	}
	return e.res, true
}

func (h *HTTP) remember(key, stamp string, res *image.Resolved) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.resolved == nil || len(h.resolved) > 1024 {
		h.resolved = map[string]*resolvedEntry{}
	}
	h.resolved[key] = &resolvedEntry{res: res, stamp: stamp, at: time.Now()}
}

// visibleIndex is the source's index with, under h.Trust, only the versions
// signed by a trusted key: what clients choose "newest" from.
func (h *HTTP) visibleIndex(ctx context.Context, src store.Source) (*store.Index, error) {
	idx, err := src.Index(ctx)
	if err != nil {
		return nil, err
	}
	idx = h.pinnedIndex(idx)
	if h.Trust == nil {
		return idx, nil
	}
	out := &store.Index{Images: map[string][]store.IndexEntry{}}
	for name, vs := range idx.Images {
		for _, e := range vs {
			res, err := h.resolveVersion(ctx, src, name, e.Version)
			if err == nil {
				err = h.Trust.Check(res)
			}
			if err != nil {
				if errors.Is(err, store.ErrNotYet) {
					return nil, err
				}
				continue
			}
			out.Images[name] = append(out.Images[name], e)
		}
	}
	return out, nil
}

// pinnedIndex leaves out, for every pinned image, the versions later than
// its pin: a client choosing the newest from the index gets the pin.
func (h *HTTP) pinnedIndex(idx *store.Index) *store.Index {
	if len(h.Pins) == 0 {
		return idx
	}
	out := &store.Index{Images: map[string][]store.IndexEntry{}}
	for name, vs := range idx.Images {
		pin, ok := h.Pins[name]
		if !ok {
			out.Images[name] = vs
			continue
		}
		var at *store.IndexEntry
		for i := range vs {
			if vs[i].Version == pin {
				at = &vs[i]
			}
		}
		for _, e := range vs {
			if at == nil || e.Version == pin || !image.Later(e.Created, e.Version, at.Created, at.Version) {
				out.Images[name] = append(out.Images[name], e)
			}
		}
	}
	return out
}

// CheckPins resolves every pin once, so a pin to a version the source
// does not have (or, under Trust, an unsigned one) is an error at start,
// not at the first boot.
func (h *HTTP) CheckPins(ctx context.Context) error {
	src, err := h.source()
	if err != nil {
		return err
	}
	for name, version := range h.Pins {
		if _, err := h.resolve(ctx, src, name, ""); err != nil {
			return fmt.Errorf("--pin %s=%s: %w", name, version, err)
		}
	}
	return nil
}
