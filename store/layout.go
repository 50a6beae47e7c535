package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
)

// LayoutFile is the default layout's name beside a manifest.
const LayoutFile = "layout.json"

// maxLayoutBytes bounds a fetched layout.json: 128 partitions are a few KiB.
const maxLayoutBytes = 1 << 20

// LayoutSource is a Source that may hold an image's default layout
// (layout.json beside the manifest). It is optional: a source without it
// gives images the layout their manifest implies.
type LayoutSource interface {
	// Layout returns the raw layout.json of one version, or an error
	// wrapping ErrNotFound when there is none.
	Layout(ctx context.Context, name, version string) ([]byte, error)
}

// fetchLayout gives the source's default layout of a version, nil when it
// has none. A layout.json that is there but unreadable is an error: falling
// back silently would deploy another disk shape than the store says.
func fetchLayout(ctx context.Context, src Source, name, version string) (*layout.Layout, error) {
	ls, ok := src.(LayoutSource)
	if !ok {
		return nil, nil
	}
	raw, err := ls.Layout(ctx, name, version)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	l, err := layout.ParseJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", LayoutFile, err)
	}
	return &l, nil
}

func (d *Dir) layoutPath(name, version string) string {
	return filepath.Join(d.Root, "images", name, version, LayoutFile)
}

// Layout implements LayoutSource.
func (d *Dir) Layout(ctx context.Context, name, version string) ([]byte, error) {
	if image.ValidName(name) != nil || image.ValidName(version) != nil {
		return nil, fmt.Errorf("image %s:%s: %w", name, version, ErrNotFound)
	}
	b, err := os.ReadFile(d.layoutPath(name, version))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s:%s: %s %w", name, version, LayoutFile, ErrNotFound)
	}
	return b, err
}

// PutLayout stores the default layout of a version already in the store.
// Unlike the manifest it may be replaced: it is not part of the image.
func (d *Dir) PutLayout(name, version string, l layout.Layout) error {
	raw, err := d.Manifest(context.Background(), name, version)
	if err != nil {
		return err
	}
	m, err := image.Parse(raw)
	if err != nil {
		return err
	}
	if _, err := m.FitLayout(l); err != nil {
		return fmt.Errorf("image %s:%s: %w", name, version, err)
	}
	b, err := layout.MarshalJSON(l)
	if err != nil {
		return err
	}
	return renameio.WriteFile(d.layoutPath(name, version), b, 0o644)
}

// Layout implements LayoutSource.
func (h *HTTP) Layout(ctx context.Context, name, version string) ([]byte, error) {
	if image.ValidName(name) != nil || image.ValidName(version) != nil {
		return nil, fmt.Errorf("image %s:%s: %w", name, version, ErrNotFound)
	}
	return h.get(ctx, "images/"+name+"/"+version+"/"+LayoutFile, maxLayoutBytes)
}

// Layout implements LayoutSource when the current source does.
func (s *Switch) Layout(ctx context.Context, name, version string) ([]byte, error) {
	src, err := s.get()
	if err != nil {
		return nil, err
	}
	ls, ok := src.(LayoutSource)
	if !ok {
		return nil, fmt.Errorf("image %s:%s: %s %w", name, version, LayoutFile, ErrNotFound)
	}
	return ls.Layout(ctx, name, version)
}
