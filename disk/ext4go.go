package disk

import (
	"errors"
	"fmt"
	"io"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
)

// ErrHasFilesystem says a partition holds something imprint did not
// expect to find there and will not format over.
var ErrHasFilesystem = errors.New("partition already holds a filesystem")

// Signature names the filesystem or volume signature at the start of sec:
// "ext4" (any ext2/3/4), "xfs", "btrfs", "swap", "luks", "vfat", or "" for
// none of them. Only the first 128 KiB are read.
func Signature(sec io.ReaderAt) (string, error) {
	b := make([]byte, 128<<10)
	n, err := sec.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) && n < 4096 {
		return "", fmt.Errorf("read the start of the partition: %w", err)
	}
	b = b[:n]
	at := func(off int, sig string) bool {
		return len(b) >= off+len(sig) && string(b[off:off+len(sig)]) == sig
	}
	switch {
	case len(b) >= 1024+0x3a && b[1024+0x38] == 0x53 && b[1024+0x39] == 0xef:
		return "ext4", nil
	case at(0, "XFSB"):
		return "xfs", nil
	case at(0x10040, "_BHRfS_M"):
		return "btrfs", nil
	case at(4096-10, "SWAPSPACE2"), at(4096-10, "SWAP-SPACE"):
		return "swap", nil
	case at(0, "LUKS\xba\xbe"):
		return "luks", nil
	case at(0x52, "FAT32"), at(0x36, "FAT1"):
		return "vfat", nil
	}
	return "", nil
}

// MakeExt4Go makes an empty ext4 filesystem on sec from Go (go-diskfs, 4 KiB
// blocks), for the agent's initramfs, which has no mkfs.ext4. It refuses a
// section that already holds any filesystem Signature knows, so a state
// partition is formatted at most once.
func MakeExt4Go(sec Section, label string) error {
	sig, err := Signature(sec)
	if err != nil {
		return err
	}
	if sig != "" {
		return fmt.Errorf("%w: %s", ErrHasFilesystem, sig)
	}
	// Old bytes in the first blocks could be read as a stale journal or
	// directory: clear them (go-diskfs writes only what it needs).
	if _, err := sec.WriteAt(make([]byte, min(sec.Len, 1<<20)), 0); err != nil {
		return err
	}
	_, err = ext4.Create(file.New(fileView{sectionDevice{sec}}, false), sec.Len, 0, 512, &ext4.Params{SectorsPerBlock: 8, VolumeName: label,
		// A one-group filesystem (up to 128 MiB) has no backup group for the
		// resize inode, and go-diskfs then fails; the state partition is never
		// grown in place anyway.
		Features: []ext4.FeatureOpt{ext4.WithFeatureReservedGDTBlocksForExpansion(false)}})
	if err != nil {
		return fmt.Errorf("ext4 on partition %s: %w", label, err)
	}
	return nil
}

// sectionDevice is a Section as a Device for fileView.
type sectionDevice struct{ s Section }

func (d sectionDevice) ReadAt(p []byte, off int64) (int, error)  { return d.s.ReadAt(p, off) }
func (d sectionDevice) WriteAt(p []byte, off int64) (int, error) { return d.s.WriteAt(p, off) }
func (d sectionDevice) Size() int64                              { return d.s.Len }
func (d sectionDevice) SectorSize() int64                        { return 512 }
