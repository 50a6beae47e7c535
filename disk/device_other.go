//go:build !linux

package disk

import "fmt"

func openBlock(path string, o OpenOptions) (*Disk, error) {
	return nil, fmt.Errorf("%s: block devices are supported on Linux only", path)
}

// ZeroRange makes [off, off+n) read as zeros.
func (d *Disk) ZeroRange(off, n int64) error { return writeZeros(d, off, n) }

// DropCache is a no-op where there is no fadvise.
func (d *Disk) DropCache(off, n int64) error { return nil }

// RereadPartitions is a no-op off Linux.
func (d *Disk) RereadPartitions() error { return nil }

// Removable is false off Linux.
func (d *Disk) Removable() bool { return false }

// Hole is false where SEEK_DATA is not available.
func (d *Disk) Hole(off, n int64) bool { return false }
