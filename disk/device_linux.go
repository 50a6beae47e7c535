package disk

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

func openBlock(path string, o OpenOptions) (*Disk, error) {
	flag := os.O_RDONLY
	if o.Write {
		// O_EXCL on a block device makes the kernel refuse the open while
		// the device or one of its partitions is mounted or claimed, and
		// keeps others from claiming it while we write.
		flag = os.O_RDWR | unix.O_EXCL
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("%w: %s is busy (mounted, swap or claimed by another device): %v", ErrHeld, path, err)
		case errors.Is(err, unix.EROFS), errors.Is(err, unix.EACCES):
			return nil, fmt.Errorf("%w: %s: %v", ErrReadOnly, path, err)
		}
		return nil, err
	}
	size, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: size: %w", path, err)
	}
	ss, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: sector size: %w", path, err)
	}
	if o.Write {
		ro, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKROGET)
		if err == nil && ro != 0 {
			f.Close()
			return nil, fmt.Errorf("%w: %s is set read-only (blockdev --setrw to change)", ErrReadOnly, path)
		}
	}
	return &Disk{f: f, path: path, size: int64(size), sectorSize: int64(ss), block: true}, nil
}

// ZeroRange makes [off, off+n) read as zeros: BLKZEROOUT on a block device
// (the device may do it without moving data), a punched hole in a file.
// Both are exact: the range reads back as zeros afterwards.
func (d *Disk) ZeroRange(off, n int64) error {
	if n <= 0 {
		return nil
	}
	fd := int(d.f.Fd())
	if d.block {
		r := [2]uint64{uint64(off), uint64(n)}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0])))
		if e == 0 {
			return nil
		}
	} else if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err == nil {
		return nil
	}
	return writeZeros(d, off, n)
}

// DropCache evicts a written range from the page cache so that a read-back
// goes to the device, not to memory. Call it after Sync.
func (d *Disk) DropCache(off, n int64) error {
	return unix.Fadvise(int(d.f.Fd()), off, n, unix.FADV_DONTNEED)
}

// RereadPartitions asks the kernel to read the new table. Loop devices
// without partition scanning refuse, which is harmless: nothing of ours
// needs the partition nodes.
func (d *Disk) RereadPartitions() error {
	if !d.block {
		return nil
	}
	if err := d.f.Sync(); err != nil {
		return err
	}
	if err := unix.IoctlSetInt(int(d.f.Fd()), unix.BLKRRPART, 0); err != nil {
		return fmt.Errorf("re-read partition table of %s: %w", d.path, err)
	}
	return nil
}

// Removable reports whether the kernel flags the device as removable media
// (USB sticks, SD cards): such disks get both UEFI and BIOS boot by default.
func (d *Disk) Removable() bool {
	if !d.block {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(d.f.Fd()), &st); err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/removable", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	return err == nil && len(b) > 0 && b[0] == '1'
}

// Hole reports whether [off, off+n) of an image file is entirely a hole
// (never for block devices, which have no holes to ask about).
func (d *Disk) Hole(off, n int64) bool {
	if d.block {
		return false
	}
	data, err := unix.Seek(int(d.f.Fd()), off, unix.SEEK_DATA)
	if err == unix.ENXIO {
		return off+n <= d.size
	}
	return err == nil && data >= off+n
}
