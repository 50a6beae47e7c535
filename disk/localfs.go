package disk

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/imprint-dev/imprint/internal/tmpdir"
	"github.com/imprint-dev/imprint/layout"
)

// MakeSwap writes a Linux swap signature (version 1, 4 KiB pages) at the
// start of sec, as mkswap does.
func MakeSwap(sec Section, label string) error {
	const page = 4096
	if sec.Len < 10*page {
		return fmt.Errorf("swap partition of %d bytes is too small", sec.Len)
	}
	h := make([]byte, page)
	binary.LittleEndian.PutUint32(h[1024:], 1)                      // version
	binary.LittleEndian.PutUint32(h[1028:], uint32(sec.Len/page-1)) // last page
	if _, err := rand.Read(h[1036:1052]); err != nil {              // uuid
		return err
	}
	h[1036+6] = h[1036+6]&0x0f | 0x40
	h[1036+8] = h[1036+8]&0x3f | 0x80
	copy(h[1052:1068], label)
	copy(h[page-10:], "SWAPSPACE2")
	_, err := sec.WriteAt(h, 0)
	return err
}

// MakeExt4 makes an empty ext4 filesystem on sec. mkfs.ext4 runs on a sparse
// temporary file, not on the target: the target is held exclusively while
// imprint writes, and mkfs.ext4 would refuse to open it. Only the extents
// mkfs wrote are copied; the first and last MiB of the partition are zeroed
// so no older signature survives there. ext4 does not read blocks it has not
// initialised, so stale data elsewhere is harmless.
func MakeExt4(ctx context.Context, sec Section, label, tmpDir string) error {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return fmt.Errorf("%w: mkfs.ext4 (e2fsprogs) for partition %s", ErrNoTool, label)
	}
	td, err := tmpdir.New(tmpDir, "ext4")
	if err != nil {
		return err
	}
	defer td.Remove()
	tmp, err := os.Create(filepath.Join(td.Path, "fs.img"))
	if err != nil {
		return err
	}
	defer tmp.Close()
	if err := tmp.Truncate(sec.Len); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-b", "4096", "-L", label, "-E", "nodiscard", tmp.Name())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 for partition %s: %w: %s", filepath.Base(label), err, out)
	}
	edge := min(int64(layout.Align), sec.Len)
	if err := writeZeros(sec, 0, edge); err != nil {
		return err
	}
	if err := writeZeros(sec, sec.Len-edge, edge); err != nil {
		return err
	}
	return copyData(tmp, sec, sec.Len)
}

// copyData copies the allocated extents of a sparse file.
func copyData(src *os.File, dst io.WriterAt, size int64) error {
	buf := make([]byte, 1<<20)
	return dataExtents(src, size, func(off, n int64) error {
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := src.ReadAt(buf[:k], off); err != nil {
				return err
			}
			if _, err := dst.WriteAt(buf[:k], off); err != nil {
				return err
			}
			off += k
			n -= k
		}
		return nil
	})
}

// CopySparseFile copies an image file, keeping its holes, so a copy of a
// mostly empty disk image costs what its data costs.
func CopySparseFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := out.Truncate(st.Size()); err != nil {
		out.Close()
		return err
	}
	if err := copyData(in, out, st.Size()); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
