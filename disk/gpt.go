package disk

import (
	"fmt"
	"github.com/imprint-dev/imprint/layout"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// Device is a deploy target: a block device or an image file.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Size() int64
	SectorSize() int64
}

// WriteGPT writes t as a GPT with a protective MBR. The boot code area of
// the MBR (bytes 0..439) is left alone so a BIOS loader written later, or
// already there, survives.
func WriteGPT(dev Device, t *layout.Table) error {
	// A table can come from a journal on the disk as well as from Place:
	// check it here too, so no caller writes one that runs off the disk.
	if err := t.Check(); err != nil {
		return fmt.Errorf("write GPT: %w", err)
	}
	if t.DiskSize != dev.Size() {
		return fmt.Errorf("write GPT: %w: the table is for a disk of %d bytes, this one has %d", layout.ErrBadLayout, t.DiskSize, dev.Size())
	}
	g := &gpt.Table{
		LogicalSectorSize:  int(t.SectorSize),
		PhysicalSectorSize: int(t.SectorSize),
		ProtectiveMBR:      true,
		GUID:               t.DiskGUID,
	}
	for _, p := range t.Partitions {
		g.Partitions = append(g.Partitions, &gpt.Partition{
			Index:      p.Index,
			Start:      uint64(p.Start / t.SectorSize),
			End:        uint64((p.Start+p.Len)/t.SectorSize) - 1,
			Size:       uint64(p.Len),
			Type:       gpt.Type(p.Type),
			Name:       p.Name,
			GUID:       p.GUID,
			Attributes: p.Attrs,
		})
	}
	if err := g.Write(fileView{dev}, dev.Size()); err != nil {
		return fmt.Errorf("write GPT: %w", err)
	}
	return nil
}

// ReadGPT reads the partition table of dev. A disk with no valid GPT gives
// ErrNoGPT.
func ReadGPT(dev Device) (diskGUID string, parts []layout.GPTPartition, err error) {
	ss := int(dev.SectorSize())
	g, err := gpt.Read(fileView{dev}, ss, ss)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrNoGPT, err)
	}
	for _, p := range g.Partitions {
		if p.Type == gpt.Unused {
			continue
		}
		parts = append(parts, layout.GPTPartition{
			Index: p.Index,
			Name:  p.Name,
			Type:  strings.ToUpper(string(p.Type)),
			GUID:  strings.ToUpper(p.GUID),
			Start: int64(p.Start) * int64(ss),
			Len:   int64(p.End-p.Start+1) * int64(ss),
			Attrs: p.Attributes,
		})
	}
	return strings.ToUpper(g.GUID), parts, nil
}

// fileView adapts a Device to the fs.File-shaped interface go-diskfs wants.
// Only ReadAt and WriteAt carry data; Seek serves go-diskfs's size probe.
type fileView struct{ d Device }

func (f fileView) ReadAt(p []byte, off int64) (int, error)  { return f.d.ReadAt(p, off) }
func (f fileView) WriteAt(p []byte, off int64) (int, error) { return f.d.WriteAt(p, off) }
func (f fileView) Read([]byte) (int, error)                 { return 0, io.EOF }
func (f fileView) Close() error                             { return nil }
func (f fileView) Stat() (fs.FileInfo, error)               { return sizeInfo(f.d.Size()), nil }
func (f fileView) Seek(off int64, whence int) (int64, error) {
	if whence == io.SeekEnd {
		return f.d.Size() + off, nil
	}
	return off, nil
}

type sizeInfo int64

func (s sizeInfo) Name() string       { return "disk" }
func (s sizeInfo) Size() int64        { return int64(s) }
func (s sizeInfo) Mode() fs.FileMode  { return 0o600 }
func (s sizeInfo) ModTime() time.Time { return time.Time{} }
func (s sizeInfo) IsDir() bool        { return false }
func (s sizeInfo) Sys() any           { return nil }
