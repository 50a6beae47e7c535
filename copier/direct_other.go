//go:build !linux

package copier

// direct is O_DIRECT I/O, which only Linux has here: elsewhere every
// transfer goes through the target itself.
type direct struct{}

func openDirect(t any, write bool) *direct { return nil }

func (d *direct) close() {}

func (d *direct) prealloc(off, n int64) {}

func (d *direct) writeAt(p []byte, off int64) (bool, error) { return false, nil }

func (d *direct) readAt(p []byte, off int64) (bool, error) { return false, nil }
