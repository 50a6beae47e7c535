package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/imprint-dev/imprint/image"

	"github.com/google/renameio/v2"
	"github.com/klauspost/compress/zstd"
)

// Source is what a deploy reads from: a store directory today, an HTTP store
// or a deployed disk later. Implementations must be safe for concurrent use.
type Source interface {
	// Index lists the images and versions the source holds.
	Index(ctx context.Context) (*Index, error)
	// Manifest returns the raw manifest bytes of one version.
	Manifest(ctx context.Context, name, version string) ([]byte, error)
	// Chunk returns the stored (zstd-compressed) bytes of a chunk.
	Chunk(ctx context.Context, sum string) ([]byte, error)
	// Signature returns the manifest's minisign signature, or an error
	// wrapping ErrNotFound for an unsigned image.
	Signature(ctx context.Context, name, version string) ([]byte, error)
}

// Index is the store's table of contents, kept as index.json at the store
// root so that a static HTTP server can serve listings too.
type Index struct {
	Images map[string][]IndexEntry `json:"images"`
}

// IndexEntry is one version in the index.
type IndexEntry struct {
	Version string    `json:"version"`
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// Latest returns the newest version of name by creation time.
func (x *Index) Latest(name string) (IndexEntry, bool) {
	vs := x.Images[name]
	if len(vs) == 0 {
		return IndexEntry{}, false
	}
	best := vs[0]
	for _, v := range vs[1:] {
		if image.Later(v.Created, v.Version, best.Created, best.Version) {
			best = v
		}
	}
	return best, true
}

// Resolve fetches and parses name at version; an empty version means the
// newest one.
func Resolve(ctx context.Context, src Source, name, version string) (*image.Resolved, error) {
	if err := image.ValidName(name); err != nil {
		return nil, fmt.Errorf("image name: %w", err)
	}
	if version == "" {
		idx, err := src.Index(ctx)
		if err != nil {
			return nil, err
		}
		e, ok := idx.Latest(name)
		if !ok {
			return nil, fmt.Errorf("image %q: %w in the store", name, ErrNotFound)
		}
		version = e.Version
	} else if err := image.ValidName(version); err != nil {
		return nil, fmt.Errorf("image version: %w", err)
	}
	raw, err := src.Manifest(ctx, name, version)
	if err != nil {
		return nil, err
	}
	m, err := image.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("image %s:%s: %w", name, version, err)
	}
	if m.Name != name || m.Version != version {
		return nil, fmt.Errorf("%w: image %s:%s holds a manifest for %s:%s", image.ErrFormat, name, version, m.Name, m.Version)
	}
	sig, err := fetchSignature(ctx, src, name, version)
	if err != nil {
		return nil, fmt.Errorf("image %s:%s: signature: %w", name, version, err)
	}
	lay, err := fetchLayout(ctx, src, name, version)
	if err != nil {
		return nil, fmt.Errorf("image %s:%s: %w", name, version, err)
	}
	if lay != nil {
		if _, err := m.FitLayout(*lay); err != nil {
			return nil, fmt.Errorf("image %s:%s: %s: %w", name, version, LayoutFile, err)
		}
	}
	return &image.Resolved{Manifest: m, Raw: raw, ID: image.ID(raw), Signature: sig, Layout: lay}, nil
}

// Dir is a store in a local directory.
type Dir struct {
	Root string

	mu  sync.Mutex // serialises index updates
	enc *zstd.Encoder
}

// OpenDir opens an existing store directory.
func OpenDir(root string) (*Dir, error) {
	st, err := os.Stat(filepath.Join(root, "chunks"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s is not an imprint store (no chunks/ directory): %w", root, ErrNotFound)
		}
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s/chunks is not a directory", root)
	}
	return &Dir{Root: root}, nil
}

// CreateDir opens a store directory, creating it when missing.
func CreateDir(root string) (*Dir, error) {
	for _, d := range []string{"chunks", "images"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	return &Dir{Root: root}, nil
}

// String names the source in messages.
func (d *Dir) String() string { return d.Root }

func (d *Dir) chunkPath(sum string) string {
	return filepath.Join(d.Root, "chunks", sum[:2], sum)
}

func (d *Dir) manifestPath(name, version string) string {
	return filepath.Join(d.Root, "images", name, version, "manifest.json")
}

// Index implements Source. It is built from the directory tree, so a store
// copied by hand without index.json still lists its images.
func (d *Dir) Index(ctx context.Context) (*Index, error) {
	idx := &Index{Images: map[string][]IndexEntry{}}
	names, err := os.ReadDir(filepath.Join(d.Root, "images"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, n := range names {
		if !n.IsDir() || image.ValidName(n.Name()) != nil {
			continue
		}
		vers, err := os.ReadDir(filepath.Join(d.Root, "images", n.Name()))
		if err != nil {
			return nil, err
		}
		for _, v := range vers {
			if !v.IsDir() || image.ValidName(v.Name()) != nil {
				continue
			}
			raw, err := os.ReadFile(d.manifestPath(n.Name(), v.Name()))
			if err != nil {
				continue // a version directory without a manifest is not an image yet
			}
			var head struct {
				Created time.Time `json:"created"`
			}
			_ = json.Unmarshal(raw, &head)
			idx.Images[n.Name()] = append(idx.Images[n.Name()], IndexEntry{Version: v.Name(), ID: image.ID(raw), Created: head.Created})
		}
	}
	for _, vs := range idx.Images {
		sort.Slice(vs, func(i, j int) bool { return vs[i].Created.Before(vs[j].Created) })
	}
	return idx, nil
}

// Manifest implements Source.
func (d *Dir) Manifest(ctx context.Context, name, version string) ([]byte, error) {
	if image.ValidName(name) != nil || image.ValidName(version) != nil {
		return nil, fmt.Errorf("image %s:%s: %w", name, version, ErrNotFound)
	}
	raw, err := os.ReadFile(d.manifestPath(name, version))
	if errors.Is(err, fs.ErrNotExist) {
		if _, err2 := os.Stat(filepath.Join(d.Root, "images", name)); err2 != nil {
			return nil, fmt.Errorf("image %q: %w in store %s", name, ErrNotFound, d.Root)
		}
		return nil, fmt.Errorf("image %q version %q: %w in store %s", name, version, ErrNotFound, d.Root)
	}
	return raw, err
}

// Chunk implements Source.
func (d *Dir) Chunk(ctx context.Context, sum string) ([]byte, error) {
	return d.ReadChunk(ctx, sum, nil)
}

// ReadChunk is Chunk reading into buf when the stored chunk fits in its
// capacity: a copier reuses a few buffers instead of allocating one per
// chunk, whose fresh pages and clearing were a tenth of a deploy's CPU.
func (d *Dir) ReadChunk(ctx context.Context, sum string, buf []byte) ([]byte, error) {
	if !image.IsHash(sum) {
		return nil, fmt.Errorf("chunk %q: %w", sum, ErrNotFound)
	}
	f, n, err := openChunkFile(d.chunkPath(sum))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("chunk %s: %w in store %s", sum, ErrNotFound, d.Root)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s in store %s: %w", sum, d.Root, err)
	}
	defer f.Close()
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	// Chunks are immutable: a file that changed size under us reads short
	// (an error) or long (its hash will not match), never silently wrong.
	b := buf[:n]
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("chunk %s: %w", sum, err)
	}
	return b, nil
}

// MaxStoredChunk bounds a stored chunk file: the largest chunk the format
// allows (64 MiB) plus zstd's worst case for it (a frame of raw blocks
// grows by 3 bytes per 128 KiB block; ZSTD_COMPRESSBOUND allows 1/256 and
// a margin). Anything larger is not a chunk, whatever its name.
const MaxStoredChunk = 64<<20 + 64<<20>>8 + 128<<10

// openChunkFile opens a chunk file only if it is a regular file of at most
// MaxStoredChunk bytes. It looks before it opens, since opening a device
// can have effects and opening a FIFO waits for a writer, and opens with
// O_NONBLOCK in case the name was swapped for a FIFO in between; the
// opened file is checked again, and that check is the one that counts.
func openChunkFile(p string) (*os.File, int64, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, 0, err
	}
	if err := chunkFileOK(st); err != nil {
		return nil, 0, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	st, err = f.Stat()
	if err == nil {
		err = chunkFileOK(st)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

func chunkFileOK(st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file (%s)", ErrBadChunk, st.Mode().Type())
	}
	if st.Size() > MaxStoredChunk {
		return fmt.Errorf("%w: %d bytes is larger than the largest stored chunk (%d)", ErrBadChunk, st.Size(), int64(MaxStoredChunk))
	}
	return nil
}

// HasChunk reports whether the chunk is already stored.
func (d *Dir) HasChunk(sum string) bool {
	_, err := os.Stat(d.chunkPath(sum))
	return err == nil
}

// PutChunk stores data under its SHA-256 unless a chunk of that name is
// already there. The write is atomic: a crash leaves no partial chunk under
// its final name.
func (d *Dir) PutChunk(sum string, data []byte) (stored bool, err error) {
	if d.HasChunk(sum) {
		return false, nil
	}
	enc, err := d.encoder()
	if err != nil {
		return false, err
	}
	comp := enc.EncodeAll(data, make([]byte, 0, len(data)/2))
	p := d.chunkPath(sum)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return false, err
	}
	if err := renameio.WriteFile(p, comp, 0o644); err != nil {
		return false, fmt.Errorf("store chunk %s: %w", sum, err)
	}
	return true, nil
}

func (d *Dir) encoder() (*zstd.Encoder, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.enc == nil {
		// EncodeAll is safe for concurrent use; one encoder serves all workers.
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		d.enc = e
	}
	return d.enc, nil
}

// PutManifest writes a manifest atomically and refreshes index.json. An
// existing version with different bytes is refused: versions are immutable.
// Every content must add up to its content sha256 from this store's chunks
// (CheckContents; image.ErrInconsistent if not), except those listed in
// made: contents image.StoreContent just made into this store, consistent
// by construction (the builder's), which are not read again.
func (d *Dir) PutManifest(m *image.Manifest, made ...*image.Content) (id string, err error) {
	if err := m.Validate(); err != nil {
		return "", err
	}
	raw, err := m.Marshal()
	if err != nil {
		return "", err
	}
	return d.putManifest(raw, made)
}

// PutManifestRaw stores manifest bytes as they are, so a copied image keeps
// its id (and its signature stays valid). The manifest's chunks must be in
// the store already: every content is checked to add up to its content
// sha256 before the manifest is written (CheckContents).
func (d *Dir) PutManifestRaw(raw []byte) (id string, err error) {
	return d.putManifest(raw, nil)
}

func (d *Dir) putManifest(raw []byte, made []*image.Content) (id string, err error) {
	m, err := image.Parse(raw)
	if err != nil {
		return "", err
	}
	p := d.manifestPath(m.Name, m.Version)
	if old, err := os.ReadFile(p); err == nil {
		if string(old) != string(raw) {
			return "", fmt.Errorf("image %s:%s: %w (image id %s); pick another --version", m.Name, m.Version, ErrExists, image.ID(old))
		}
		return image.ID(raw), nil
	}
	// Parse made a copy: the contents of made are found by value.
	skip := func(c *image.Content) bool {
		for _, k := range made {
			if k.Size == c.Size && k.SHA256 == c.SHA256 && slices.Equal(k.Chunks, c.Chunks) {
				return true
			}
		}
		return false
	}
	if err := d.CheckContents(context.Background(), m, skip); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	if err := renameio.WriteFile(p, raw, 0o644); err != nil {
		return "", err
	}
	return image.ID(raw), d.writeIndex()
}

func (d *Dir) writeIndex() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	idx, err := d.Index(context.Background())
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return renameio.WriteFile(filepath.Join(d.Root, "index.json"), append(b, '\n'), 0o644)
}

// ChunkStat describes stored chunks for inspect.
type ChunkStat struct {
	Count int
	Bytes int64 // compressed bytes on disk
}

// StoredChunks walks chunks/ and sums what is there.
func (d *Dir) StoredChunks() (ChunkStat, error) {
	var st ChunkStat
	err := filepath.WalkDir(filepath.Join(d.Root, "chunks"), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() && image.IsHash(e.Name()) {
			info, err := e.Info()
			if err != nil {
				return err
			}
			st.Count++
			st.Bytes += info.Size()
		}
		return nil
	})
	return st, err
}
