package disk

import (
	"errors"
	"fmt"
	"github.com/imprint-dev/imprint/layout"
	"io/fs"
	"os"
)

// OpenOptions say how a target is opened.
type OpenOptions struct {
	// Write opens for writing; block devices are then held exclusively.
	Write bool
	// Create makes a missing image file of Size bytes.
	Create bool
	// Size grows an image file to this many bytes (0: leave it).
	Size int64
}

// Disk is an opened target: a block device or an image file.
type Disk struct {
	f          *os.File
	path       string
	size       int64
	sectorSize int64
	block      bool
	// lockRecord is the holder record of a disk opened for writing.
	lockRecord string
}

// OpenDisk opens a target for reading or writing. Opened for writing, the
// disk is locked against every other imprint command that writes (deploy,
// sync, boot), in this process or another: the second gets ErrLocked
// naming the holder. Readers take no lock, so verify and inspect still
// look at a disk being written.
func OpenDisk(path string, o OpenOptions) (*Disk, error) {
	d, err := openDisk(path, o)
	if err != nil || !o.Write {
		return d, err
	}
	if d.lockRecord, err = lock(d.f, path); err != nil {
		d.f.Close()
		return nil, err
	}
	return d, nil
}

func openDisk(path string, o OpenOptions) (*Disk, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && o.Create:
		if o.Size <= 0 {
			return nil, fmt.Errorf("%s does not exist; give --size to create an image file", path)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, err
		}
		if err := f.Truncate(o.Size); err != nil {
			// The file is ours (O_EXCL): a failed create leaves nothing.
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("create %s of %s: %w", path, layout.HumanSize(o.Size), err)
		}
		return &Disk{f: f, path: path, size: o.Size, sectorSize: 512}, nil
	case err != nil:
		return nil, err
	}
	if st.Mode().IsRegular() {
		flag := os.O_RDONLY
		if o.Write {
			flag = os.O_RDWR
		}
		f, err := os.OpenFile(path, flag, 0)
		if err != nil {
			return nil, err
		}
		size := st.Size()
		if o.Size > 0 && o.Write {
			if o.Size < size {
				f.Close()
				return nil, fmt.Errorf("%s is %s; --size %s would shrink it (imprint never shrinks a file)", path, layout.HumanSize(size), layout.HumanSize(o.Size))
			}
			if err := f.Truncate(o.Size); err != nil {
				f.Close()
				return nil, fmt.Errorf("grow %s: %w", path, err)
			}
			size = o.Size
		}
		return &Disk{f: f, path: path, size: size, sectorSize: 512}, nil
	}
	if st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0 {
		return openBlock(path, o)
	}
	return nil, fmt.Errorf("%s is neither a block device nor a regular file", path)
}

// ReadAt implements io.ReaderAt.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) { return d.f.ReadAt(p, off) }

// WriteAt implements io.WriterAt.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }

// Size is the target's size in bytes.
func (d *Disk) Size() int64 { return d.size }

// SectorSize is the logical sector size.
func (d *Disk) SectorSize() int64 { return d.sectorSize }

// Path is what the target was opened as.
func (d *Disk) Path() string { return d.path }

// IsBlock tells a block device from an image file.
func (d *Disk) IsBlock() bool { return d.block }

// File gives the open file for ioctls.
func (d *Disk) File() *os.File { return d.f }

// Sync flushes written data to stable storage.
func (d *Disk) Sync() error { return d.f.Sync() }

// Close closes the target, releasing its lock.
func (d *Disk) Close() error {
	unlock(d.lockRecord)
	d.lockRecord = ""
	return d.f.Close()
}

// Section is a window on a Device: one partition, addressed from its start.
type Section struct {
	D   Device
	Off int64
	Len int64
}

// ReadAt reads within the section.
func (s Section) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.Len {
		return 0, fmt.Errorf("read of %d bytes at %d past the end of a %d-byte partition", len(p), off, s.Len)
	}
	return s.D.ReadAt(p, s.Off+off)
}

// WriteAt writes within the section.
func (s Section) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.Len {
		return 0, fmt.Errorf("write of %d bytes at %d past the end of a %d-byte partition", len(p), off, s.Len)
	}
	return s.D.WriteAt(p, s.Off+off)
}

// Backing gives the open file the section lies on, the section's offset in
// it and its length, so a copier can do its own I/O that bypasses the page
// cache (O_DIRECT) on a second descriptor. f is nil when the section is not
// on a Disk.
func (s Section) Backing() (f *os.File, off, n int64) {
	d, ok := s.D.(*Disk)
	if !ok {
		return nil, 0, 0
	}
	return d.f, s.Off, s.Len
}

// Hole reports whether the section's range is a hole of the underlying
// image file.
func (s Section) Hole(off, n int64) bool {
	h, ok := s.D.(interface{ Hole(off, n int64) bool })
	return ok && h.Hole(s.Off+off, n)
}
