package disk

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/imprint-dev/imprint/layout"
	iofs "io/fs"
	"os"
	"path"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// MinESPSize is the smallest FAT32 ESP that firmware accepts at 512-byte
// sectors: below it FAT32 has too few clusters (see FIELD-NOTES).
const MinESPSize = 48 << 20

// FAT is a FAT32 filesystem on a partition of an unmounted target, read and
// written through go-diskfs (the ESP cannot be mounted on every host).
type FAT struct {
	fs         *fat32.FileSystem
	dev        Device
	start, len int64
	// mended is set once the second FAT copy was made equal to the first
	// in this session, before the first write.
	mended bool
}

// FormatFAT makes a new FAT32 filesystem on p.
func FormatFAT(dev Device, p layout.Placed, label string) (*FAT, error) {
	minSize := int64(MinESPSize)
	if dev.SectorSize() == 4096 {
		minSize = 300 << 20
	}
	if p.Len < minSize {
		return nil, fmt.Errorf("%w: partition %q is %s; FAT32 at %d-byte sectors needs at least %s", layout.ErrBadLayout, p.Name, layout.HumanSize(p.Len), dev.SectorSize(), layout.HumanSize(minSize))
	}
	fs, err := fat32.Create(file.New(fileView{dev}, false), p.Len, p.Start, dev.SectorSize(), label, false)
	if err != nil {
		return nil, fmt.Errorf("format FAT32 on partition %q: %w", p.Name, err)
	}
	return &FAT{fs: fs, dev: dev, start: p.Start, len: p.Len}, nil
}

// OpenFAT opens the FAT32 filesystem on the partition at start/len. When
// the two FAT copies differ (a crash fell between their writes) it reads
// the first, as firmware and fsck.fat do; the first write mends the second.
func OpenFAT(dev Device, start, length int64) (*FAT, error) {
	fs, err := readFAT32(dev, start, length)
	if err != nil {
		return nil, fmt.Errorf("read FAT32 at offset %d: %w", start, err)
	}
	return &FAT{fs: fs, dev: dev, start: start, len: length}, nil
}

// readFAT32 opens the filesystem through firstFATView: go-diskfs v1.9.4
// refuses a volume whose FAT copies differ ("fat tables did not match",
// fat32.Read) instead of using the first.
func readFAT32(dev Device, start, length int64) (*fat32.FileSystem, error) {
	var view Device = dev
	if g, err := readGeom(dev, start); err == nil && g.nfats >= 2 {
		view = firstFATView{Device: dev, fat1: g.entryOff(0, 0), fat2: g.entryOff(0, 1), n: g.fatSz * g.bps}
	}
	return fat32.Read(file.New(fileView{view}, false), length, start, dev.SectorSize())
}

// firstFATView reads the second FAT copy's bytes from the first copy.
// Writes pass through untouched: go-diskfs writes both copies itself.
type firstFATView struct {
	Device
	fat1, fat2, n int64
}

func (v firstFATView) ReadAt(p []byte, off int64) (int, error) {
	n, err := v.Device.ReadAt(p, off)
	lo, hi := max(off, v.fat2), min(off+int64(n), v.fat2+v.n)
	if lo < hi {
		if _, err := v.Device.ReadAt(p[lo-off:hi-off], v.fat1+(lo-v.fat2)); err != nil {
			return 0, err
		}
	}
	return n, err
}

// beforeWrite makes the FAT copies agree (the first wins) before this
// session changes anything, so a disk a crash left with differing copies
// is whole again after one successful edit. Every write then goes to the
// first copy before the second (go-diskfs's WriteFat and free below), as
// the Linux vfat driver does: a crash between them leaves the copy that
// firmware, fsck.fat and imprint read holding the newer state.
func (f *FAT) beforeWrite() error {
	if f.mended {
		return nil
	}
	g, err := readGeom(f.dev, f.start)
	if err != nil {
		return err
	}
	for i := int64(1); i < g.nfats; i++ {
		one, other := make([]byte, g.fatSz*g.bps), make([]byte, g.fatSz*g.bps)
		if _, err := f.dev.ReadAt(one, g.entryOff(0, 0)); err != nil {
			return err
		}
		if _, err := f.dev.ReadAt(other, g.entryOff(0, i)); err != nil {
			return err
		}
		if !bytes.Equal(one, other) {
			if _, err := f.dev.WriteAt(one, g.entryOff(0, i)); err != nil {
				return fmt.Errorf("mend FAT copy %d from the first: %w", i+1, err)
			}
		}
	}
	// Clusters a crash left allocated but unreachable are freed here, so
	// a rerun after a kill leaves the ESP as fsck.fat wants it.
	n, err := g.reclaim(f.dev)
	if err != nil {
		return fmt.Errorf("reclaim leaked FAT clusters: %w", err)
	}
	// The free count too: a crash between a FAT write and its FSInfo
	// update leaves it stale.
	if err := g.fixFSInfo(f.dev); err != nil {
		return err
	}
	if n > 0 {
		// go-diskfs keeps its own copy of the table and writes it back
		// whole: it must see the freed clusters.
		if err := f.reopen(); err != nil {
			return err
		}
	}
	f.mended = true
	return nil
}

// Mend makes a filesystem a crash left behind whole again, as a write-open
// does: the FAT copies made equal (the first wins), clusters no entry
// reaches freed, the FSInfo free count recounted. Every write does it
// first anyway; Mend is for a writer that may end up writing nothing (an
// edit that a killed run already made).
func (f *FAT) Mend() error { return f.beforeWrite() }

// go-diskfs wants "/a/b" for OpenFile/Mkdir and "a/b" for ReadDir.
func abs(p string) string { return "/" + strings.TrimPrefix(path.Clean("/"+p), "/") }
func rel(p string) string {
	r := strings.TrimPrefix(path.Clean("/"+p), "/")
	if r == "" {
		return "."
	}
	return r
}

// MkdirAll makes dir and its parents.
func (f *FAT) MkdirAll(dir string) error {
	if err := f.beforeWrite(); err != nil {
		return err
	}
	top := strings.SplitN(rel(dir), "/", 2)[0]
	newTop := top != "." && !f.Exists(top)
	if err := f.fs.Mkdir(abs(dir)); err != nil {
		return err
	}
	if !newTop {
		return nil
	}
	g, err := readGeom(f.dev, f.start)
	if err != nil {
		return err
	}
	if err := g.fixDotDot(f.dev, top); err != nil {
		return fmt.Errorf("mkdir %s: %w", top, err)
	}
	if err := g.fixFSInfo(f.dev); err != nil {
		return err
	}
	return f.reopen()
}

func (f *FAT) reopen() error {
	fs, err := readFAT32(f.dev, f.start, f.len)
	if err != nil {
		return err
	}
	f.fs = fs
	return nil
}

// readFile reads a whole file. It reads the cluster chain itself:
// go-diskfs v1.9.4 returns bytes past the end of a file when it is read in
// pieces that do not end on a cluster boundary.
func (f *FAT) readFile(name string) ([]byte, error) {
	if !f.Exists(name) {
		return nil, fmt.Errorf("%s: %w", name, iofs.ErrNotExist)
	}
	g, err := readGeom(f.dev, f.start)
	if err != nil {
		return nil, err
	}
	return g.readFile(f.dev, rel(name))
}

// Exists reports whether name is there.
func (f *FAT) Exists(name string) bool {
	ents, err := f.fs.ReadDir(rel(path.Dir(abs(name))))
	if err != nil {
		return false
	}
	base := path.Base(abs(name))
	for _, e := range ents {
		if strings.EqualFold(e.Name(), base) {
			return true
		}
	}
	return false
}

// ReadDir lists a directory.
func (f *FAT) ReadDir(dir string) ([]iofs.DirEntry, error) {
	return f.fs.ReadDir(rel(dir))
}

// Remove deletes a file; a missing file is not an error.
func (f *FAT) Remove(name string) error {
	if !f.Exists(name) {
		return nil
	}
	if err := f.beforeWrite(); err != nil {
		return err
	}
	g, err := readGeom(f.dev, f.start)
	if err != nil {
		return err
	}
	_, first, err := g.lookup(f.dev, rel(name))
	if err != nil {
		return err
	}
	clusters, err := g.chain(f.dev, first)
	if err != nil {
		return err
	}
	if err := f.fs.Remove(abs(name)); err != nil {
		return err
	}
	if err := g.free(f.dev, clusters); err != nil {
		return err
	}
	if err := g.fixFSInfo(f.dev); err != nil {
		return err
	}
	return f.reopen()
}

// WriteFile writes name so that a crash leaves either the old or the new
// content findable: the data goes to name+".new" first, then the old file
// is removed and the new one renamed over. ReadFile finds the ".new"
// file if the crash fell between the two.
func (f *FAT) WriteFile(name string, data []byte) error {
	if err := f.MkdirAll(path.Dir(abs(name))); err != nil {
		return err
	}
	tmp := abs(name) + ".new"
	if err := f.Remove(tmp); err != nil {
		return err
	}
	h, err := f.fs.OpenFile(tmp, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if _, err := h.Write(data); err != nil {
		h.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := h.Close(); err != nil {
		return err
	}
	if err := f.Remove(name); err != nil {
		return err
	}
	if err := f.fs.Rename(tmp, abs(name)); err != nil {
		return err
	}
	return f.fixInfo()
}

// fixInfo keeps the FSInfo free count true after go-diskfs changed the FAT.
func (f *FAT) fixInfo() error {
	g, err := readGeom(f.dev, f.start)
	if err != nil {
		return err
	}
	return g.fixFSInfo(f.dev)
}

// ReadFile reads a whole file. For a file written by WriteFile it falls
// back to the ".new" file that a crash between remove and rename leaves.
func (f *FAT) ReadFile(name string) ([]byte, error) {
	b, err := f.readFile(name)
	if errors.Is(err, iofs.ErrNotExist) && f.Exists(name+".new") {
		return f.readFile(name + ".new")
	}
	return b, err
}

// VolumeID is the FAT volume serial as GRUB and blkid print it ("ABCD-1234").
func (f *FAT) VolumeID() (string, error) {
	var b [4]byte
	if _, err := f.dev.ReadAt(b[:], f.start+67); err != nil {
		return "", err
	}
	return fmt.Sprintf("%02X%02X-%02X%02X", b[3], b[2], b[1], b[0]), nil
}
