//go:build !linux

package disk

import "os"

// lock is Linux only; elsewhere image files are not locked.
func lock(f *os.File, path string) (string, error) { return "", nil }

func unlock(record string) {}
