package deploy

import (
	"context"
	"fmt"
	"io/fs"
	"os"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
	"golang.org/x/sys/unix"
)

// tmpTarget is a sparse temporary file as a copier target.
type tmpTarget struct{ f *os.File }

func (t tmpTarget) ReadAt(p []byte, off int64) (int, error)  { return t.f.ReadAt(p, off) }
func (t tmpTarget) WriteAt(p []byte, off int64) (int, error) { return t.f.WriteAt(p, off) }
func (t tmpTarget) ZeroRange(off, n int64) error {
	return unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// OpenRootFS assembles the image's root partition in a sparse temporary
// file under tmpDir (every chunk checked against the manifest) and opens
// its ext4 filesystem read-only, for looking inside an image without
// deploying it (imprint identity preview --image). close removes the file.
func OpenRootFS(ctx context.Context, srcs []store.Source, res *image.Resolved, tmpDir string) (fsys fs.FS, close func(), err error) {
	rp, err := res.Manifest.RootPartition()
	if err != nil {
		return nil, nil, err
	}
	f, err := os.CreateTemp(tmpDir, "imprint-root-*.img")
	if err != nil {
		return nil, nil, err
	}
	close = func() { f.Close(); os.Remove(f.Name()) }
	defer func() {
		if err != nil {
			close()
		}
	}()
	if err := f.Truncate(rp.Content.Size); err != nil {
		return nil, nil, err
	}
	dec, err := image.NewDecoder()
	if err != nil {
		return nil, nil, err
	}
	defer dec.Close()
	cp := &copier.Copier{Sources: srcs, Dec: dec, ChunkSize: res.Manifest.ChunkSize}
	if err := cp.Write(ctx, rp.Content, tmpTarget{f}, copier.Hooks{}); err != nil {
		return nil, nil, fmt.Errorf("partition %s: %w", rp.Name, err)
	}
	e4, err := ext4.Read(file.New(f, true), rp.Content.Size, 0, 512)
	if err != nil {
		return nil, nil, fmt.Errorf("partition %s is not an ext4 filesystem imprint can read: %w", rp.Name, err)
	}
	return e4, close, nil
}
