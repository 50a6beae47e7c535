// Package disk owns device access (block devices and image files behind
// io.ReaderAt/io.WriterAt), GPT reading and writing, the ESP's FAT, local
// filesystems, and the safety checks that keep imprint off the wrong disk.
package disk

import "errors"

// Sentinel errors callers act on.
var (
	ErrMounted     = errors.New("target is mounted")
	ErrSwap        = errors.New("target is used as swap")
	ErrHeld        = errors.New("target is held by another device")
	ErrRunningRoot = errors.New("target holds the running root filesystem")
	ErrReadOnly    = errors.New("target is read-only")
	ErrNoGPT       = errors.New("no GPT partition table")
	// ErrLocked says another imprint command is writing the disk.
	ErrLocked    = errors.New("target is in use by another imprint command")
	ErrNotTarget = errors.New("target is neither a block device nor a regular file")
	// ErrNoTool says a program imprint runs is not installed (the agent's
	// initramfs has no mkfs.ext4).
	ErrNoTool = errors.New("tool not found")
)
