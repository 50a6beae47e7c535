package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/imprint-dev/imprint/image"
)

// PruneOptions choose what Prune drops.
type PruneOptions struct {
	// Keep is how many versions of each image stay, the newest by
	// creation time; at least 1.
	Keep int
	// Grace spares chunk files younger than this: a build that is still
	// storing chunks has not written the manifest that names them yet.
	Grace  time.Duration
	DryRun bool
	Now    time.Time
}

// PruneResult is what Prune dropped (or, dry, would drop).
type PruneResult struct {
	Versions   []string `json:"versions"` // name:version
	Chunks     int      `json:"chunks"`
	Bytes      int64    `json:"bytes"` // as stored
	KeptChunks int      `json:"kept_chunks"`
}

// Prune drops every version of each image but the newest o.Keep, then
// every chunk no remaining manifest names.
func (d *Dir) Prune(ctx context.Context, o PruneOptions) (*PruneResult, error) {
	if o.Keep < 1 {
		return nil, fmt.Errorf("--keep %d: keep at least one version", o.Keep)
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	idx, err := d.Index(ctx)
	if err != nil {
		return nil, err
	}
	res := &PruneResult{}
	used := map[string]bool{}
	for name, vs := range idx.Images { // oldest first
		for i, v := range vs {
			if i < len(vs)-o.Keep {
				res.Versions = append(res.Versions, name+":"+v.Version)
				if !o.DryRun {
					if err := os.RemoveAll(filepath.Dir(d.manifestPath(name, v.Version))); err != nil {
						return nil, err
					}
				}
				continue
			}
			raw, err := d.Manifest(ctx, name, v.Version)
			if err != nil {
				return nil, fmt.Errorf("image %s:%s: %w", name, v.Version, err)
			}
			m, err := image.Parse(raw)
			if err != nil {
				// A manifest this imprint cannot read may name any chunk:
				// pruning chunks around it could break it.
				return nil, fmt.Errorf("image %s:%s: %w; nothing pruned", name, v.Version, err)
			}
			for _, c := range m.Contents() {
				for _, s := range c.Content.Chunks {
					used[s] = true
				}
			}
		}
	}
	if len(res.Versions) > 0 && !o.DryRun {
		if err := d.writeIndex(); err != nil {
			return nil, err
		}
	}
	err = filepath.WalkDir(filepath.Join(d.Root, "chunks"), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.Type().IsRegular() || !image.IsHash(e.Name()) {
			return nil
		}
		if used[e.Name()] {
			res.KeptChunks++
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if o.Now.Sub(info.ModTime()) < o.Grace {
			res.KeptChunks++
			return nil
		}
		res.Chunks++
		res.Bytes += info.Size()
		if o.DryRun {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
	return res, err
}
