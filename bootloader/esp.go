package bootloader

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/layout"
)

// ErrNoESP says a disk has no EFI System Partition.
var ErrNoESP = errors.New("no EFI System Partition")

// ErrUnknownLoader says a boot loader name is neither SystemdBoot nor Grub.
var ErrUnknownLoader = errors.New("unknown boot loader (want systemd-boot or grub)")

// ErrNotDir says a mounted ESP was named by something that is not a
// directory.
var ErrNotDir = errors.New("not a directory")

// ESP is an opened EFI System Partition: of an unmounted disk or image file
// (through the FAT code) or a mounted one. Its methods edit imprint's boot
// menu on it.
type ESP struct {
	FS    FS
	close func() error
}

// NewESP wraps an FS its caller opened and will close.
func NewESP(f FS) *ESP { return &ESP{FS: f, close: func() error { return nil }} }

// OpenDirESP opens a mounted ESP, e.g. /boot/efi on a running system.
func OpenDirESP(dir string) (*ESP, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotDir)
	}
	return NewESP(DirFS(dir)), nil
}

// OpenDiskESP opens the ESP of an unmounted disk or image file. For
// writing, the target is first checked like a deploy target (not mounted,
// not the running root, not in use), since the FAT code must be its only
// writer; the errors are disk's (ErrMounted, ErrHeld, ...).
func OpenDiskESP(path string, write bool) (*ESP, error) {
	if write {
		if err := disk.CheckTarget(path); err != nil {
			return nil, err
		}
	}
	dev, err := disk.OpenDisk(path, disk.OpenOptions{Write: write})
	if err != nil {
		return nil, err
	}
	p, err := FindESP(dev)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	fat, err := disk.OpenFAT(dev, p.Start, p.Len)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("%s: ESP (partition %d): %w", path, p.Index, err)
	}
	if write {
		// What a killed edit left (leaked clusters, differing FAT
		// copies) is mended now, even if this edit writes nothing.
		if err := fat.Mend(); err != nil {
			dev.Close()
			return nil, fmt.Errorf("%s: ESP (partition %d): %w", path, p.Index, err)
		}
	}
	return &ESP{FS: fat, close: func() error {
		err := dev.Sync()
		if cerr := dev.Close(); err == nil {
			err = cerr
		}
		return err
	}}, nil
}

// Close flushes what was written and closes the disk, if ESP opened one.
func (e *ESP) Close() error { return e.close() }

// FindESP returns the first EFI System Partition in dev's GPT.
func FindESP(dev disk.Device) (layout.GPTPartition, error) {
	_, parts, err := disk.ReadGPT(dev)
	if err != nil {
		return layout.GPTPartition{}, err
	}
	if p, ok := layout.FindESP(parts); ok {
		return p, nil
	}
	return layout.GPTPartition{}, ErrNoESP
}

// loaderFiles is where Install puts each UEFI loader, as a firmware boot
// entry names it.
var loaderFiles = map[string]string{
	SystemdBoot: `\EFI\systemd\systemd-bootx64.efi`,
	Grub:        `\EFI\imprint\grubx64.efi`,
}

// LoaderOnDisk says where imprint's UEFI loader (SystemdBoot or Grub) lies
// on the ESP of the disk at path, in the form a firmware boot entry
// (Efivars.AddBootEntry) needs.
func LoaderOnDisk(path, loader string) (DiskPath, error) {
	file, ok := loaderFiles[loader]
	if !ok {
		return DiskPath{}, fmt.Errorf("%q: %w", loader, ErrUnknownLoader)
	}
	dev, err := disk.OpenDisk(path, disk.OpenOptions{})
	if err != nil {
		return DiskPath{}, err
	}
	defer dev.Close()
	p, err := FindESP(dev)
	if err != nil {
		return DiskPath{}, fmt.Errorf("%s: %w", path, err)
	}
	ss := dev.SectorSize()
	return DiskPath{
		PartNum: uint32(p.Index), Start: uint64(p.Start / ss), Len: uint64(p.Len / ss), PartGUID: p.GUID, File: file,
	}, nil
}

// ParseBootNum reads a firmware boot entry number as efibootmgr shows it:
// hexadecimal, "0003" or "Boot0003".
func ParseBootNum(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "boot"), 16, 16)
	if err != nil {
		return 0, fmt.Errorf("%q is not a boot entry number like 0003", s)
	}
	return uint16(n), nil
}
