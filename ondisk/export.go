package ondisk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
	"golang.org/x/sync/errgroup"
)

// ExportOptions configure Export.
type ExportOptions struct {
	// AllowDrift exports a drifted disk as a new version named
	// <version>-drifted-<UTC time> holding what the disk has now, instead
	// of refusing it.
	AllowDrift bool
	// Signer signs the new manifest of a drifted export. An exact export
	// keeps the master's own signature and needs none.
	Signer *image.Signer
	// Now names a drifted version; zero means the current time.
	Now time.Time
	// Progress gets uncompressed byte counts as chunks are checked; calls
	// do not overlap.
	Progress func(n int64)
	Workers  int
}

// ExportResult says what Export did.
type ExportResult struct {
	Name     string   `json:"name"`
	Version  string   `json:"version"`
	ID       string   `json:"image_id"`
	MasterID string   `json:"master_image_id"`
	Chunks   int      `json:"chunks"`
	New      int      `json:"new_chunks"`
	NewBytes int64    `json:"new_bytes"`
	Drifted  []string `json:"drifted,omitempty"`
	Signed   bool     `json:"signed"`
}

// Export writes the image a deployed disk holds into a store. Every chunk
// is read from the disk and checked against the disk's manifest, also those
// the store already has: an export vouches for the disk. The manifest is
// stored byte for byte, so the store's image id is the master's and the
// master's signature still holds. A drifted disk is refused with ErrDrifted
// (the store then holds no new image; chunks already copied are valid
// content of the master and harmless), unless AllowDrift.
func Export(ctx context.Context, src *DiskSource, dst *store.Dir, o ExportOptions) (*ExportResult, error) {
	m := src.od.Manifest
	res := &ExportResult{Name: m.Name, Version: m.Version, ID: src.od.State.ImageID, MasterID: src.od.State.ImageID}
	// A boot file the disk does not carry can only be exported if the
	// store already has its chunks (e.g. from an earlier export).
	for _, mf := range src.missing {
		for _, sum := range mf.content.Chunks {
			if sum != image.ZeroChunk && !dst.HasChunk(sum) {
				return nil, fmt.Errorf("%s: the image's %s is not on the disk's ESP (deployed without a boot loader?) and %s does not hold it: nothing exported", src.path, mf.path, dst.Root)
			}
		}
	}

	// Every place is read and checked, zero chunks and repeated chunks
	// too: each is a place where the disk can differ from its manifest.
	var mu sync.Mutex
	drifted := map[string]bool{} // content labels
	seen := map[string]bool{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(o.Workers, 2))
	for _, pl := range src.places {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			b, err := src.read(pl.loc)
			if errors.Is(err, ErrDrifted) { // a boot file that shrank
				b = nil
			} else if err != nil {
				return fmt.Errorf("%s: %w", pl.loc.label, err)
			}
			var ok bool
			if pl.sum == image.ZeroChunk {
				ok = b != nil && image.IsZero(b)
			} else {
				ok = b != nil && image.HashBytes(b) == pl.sum
			}
			mu.Lock()
			if !ok {
				drifted[pl.content] = true
				res.Drifted = append(res.Drifted, pl.loc.label)
			}
			store := ok && pl.sum != image.ZeroChunk && !seen[pl.sum]
			if store {
				seen[pl.sum] = true
				res.Chunks++
			}
			mu.Unlock()
			if store {
				stored, err := dst.PutChunk(pl.sum, b)
				if err != nil {
					return err
				}
				if stored {
					mu.Lock()
					res.New++
					res.NewBytes += int64(len(b))
					mu.Unlock()
				}
			}
			if o.Progress != nil {
				mu.Lock() // Progress is called from every worker
				o.Progress(pl.loc.n)
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if len(drifted) == 0 {
		if _, err := dst.PutManifestRaw(src.od.ManifestRaw); err != nil {
			return nil, err
		}
		if src.sig != nil {
			if err := dst.PutSignature(m.Name, m.Version, src.sig); err != nil {
				return nil, err
			}
			res.Signed = true
		}
		if err := putDiskLayout(dst, src, m); err != nil {
			return nil, err
		}
		return res, nil
	}
	if !o.AllowDrift {
		return res, fmt.Errorf("%s: %w: %d chunk(s) differ from the manifest (%s); nothing exported (--allow-drift exports the disk as it is, as a new version)",
			src.path, ErrDrifted, len(res.Drifted), summarize(res.Drifted))
	}
	return exportDrifted(ctx, src, dst, o, res, drifted)
}

// exportDrifted stores the disk's current content as a new version. Only
// contents with a drifted chunk are cut again; the rest keep their chunks.
// putDiskLayout stores the layout the disk was deployed with as the
// exported image's default, so the site's deploys make the same shape.
func putDiskLayout(dst *store.Dir, src *DiskSource, m *image.Manifest) error {
	if src.od.Layout == nil {
		return nil
	}
	if err := dst.PutLayout(m.Name, m.Version, *src.od.Layout); err != nil {
		return fmt.Errorf("%s: %w", LayoutFile, err)
	}
	return nil
}

func exportDrifted(ctx context.Context, src *DiskSource, dst *store.Dir, o ExportOptions, res *ExportResult, drifted map[string]bool) (*ExportResult, error) {
	raw, err := src.od.Manifest.Marshal()
	if err != nil {
		return nil, err
	}
	nm, err := image.Parse(raw) // a deep copy to edit
	if err != nil {
		return nil, err
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	nm.Version = nm.Version + "-drifted-" + now.UTC().Format("20060102T150405Z")
	nm.Created = now.UTC().Truncate(time.Second)
	// The recut contents are consistent by construction; the store checks
	// the others (the master's) before it takes the manifest.
	var made []*image.Content
	recut := func(c *image.Content, r io.ReaderAt, size int64) (*image.Content, error) {
		nc, st, err := image.StoreContent(ctx, dst, r, size, nm.ChunkSize, nil)
		if err != nil {
			return nil, err
		}
		made = append(made, nc)
		res.New += st.New
		res.NewBytes += st.NewBytes
		return nc, nil
	}
	for i := range nm.Partitions {
		p := &nm.Partitions[i]
		if p.Content == nil || !drifted["partition "+p.Name] {
			continue
		}
		placed, _ := src.od.State.Table.Find(src.od.State.PartitionOf(p.Name))
		if p.Content, err = recut(p.Content, disk.Section{D: src.dev, Off: placed.Start, Len: placed.Len}, p.Content.Size); err != nil {
			return nil, fmt.Errorf("partition %s: %w", p.Name, err)
		}
	}
	if b := nm.Boot; b != nil {
		for _, f := range []struct {
			c    **image.Content
			name string
		}{{&b.Kernel, "vmlinuz"}, {&b.Initrd, "initrd.img"}, {&b.Agent, "agent.img"}} {
			if *f.c == nil || !drifted[f.name] {
				continue
			}
			// Already read while checking, and kept.
			data, err := src.espFile(bootDir + "/" + src.od.Manifest.Version + "/" + f.name)
			if err != nil {
				return nil, err
			}
			if *f.c, err = recut(*f.c, bytes.NewReader(data), int64(len(data))); err != nil {
				return nil, fmt.Errorf("%s: %w", f.name, err)
			}
		}
	}
	for name, c := range nm.Loaders {
		if !drifted["loader "+name] {
			continue
		}
		data, err := src.espFile(LoadersDir + "/" + name)
		if err != nil {
			return nil, err
		}
		if nm.Loaders[name], err = recut(c, bytes.NewReader(data), int64(len(data))); err != nil {
			return nil, fmt.Errorf("loader %s: %w", name, err)
		}
	}
	id, err := dst.PutManifest(nm, made...)
	if err != nil {
		return nil, err
	}
	res.Version, res.ID = nm.Version, id
	// The re-encoded manifest is format 2: a format-1 master's embedded
	// layout would be lost without a layout.json.
	lay := src.od.Layout
	if l, ok := src.od.Manifest.EmbeddedLayout(); ok && lay == nil {
		lay = &l
	}
	if lay != nil {
		if err := dst.PutLayout(nm.Name, nm.Version, *lay); err != nil {
			return nil, fmt.Errorf("%s: %w", LayoutFile, err)
		}
	}
	if o.Signer != nil {
		nraw, err := nm.Marshal()
		if err != nil {
			return nil, err
		}
		sig, err := o.Signer.Sign(nraw)
		if err != nil {
			return nil, err
		}
		if err := dst.PutSignature(nm.Name, nm.Version, sig); err != nil {
			return nil, err
		}
		res.Signed = true
	}
	return res, nil
}

func summarize(labels []string) string {
	sort.Strings(labels)
	if len(labels) > 5 {
		return fmt.Sprintf("%v and %d more", labels[:5], len(labels)-5)
	}
	return fmt.Sprint(labels)
}
