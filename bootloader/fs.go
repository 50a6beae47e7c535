// Package bootloader owns the ESP's boot content: systemd-boot or GRUB for
// UEFI, GRUB for legacy BIOS, the boot entries, and their atomic update.
package bootloader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
)

// FS is an ESP: either an unmounted FAT filesystem on a disk
// (partition.FAT) or a mounted one (DirFS). Names are slash-separated from
// the ESP root. WriteFile must replace a file so that a crash leaves the old
// or the new content, and ReadFile must find what WriteFile left.
type FS interface {
	ReadFile(name string) ([]byte, error)
	WriteFile(name string, data []byte) error
	Remove(name string) error
	MkdirAll(dir string) error
	ReadDir(dir string) ([]fs.DirEntry, error)
	Exists(name string) bool
}

// DirFS is a mounted ESP, e.g. /boot/efi on a running system.
type DirFS string

func (d DirFS) path(name string) string {
	return filepath.Join(string(d), filepath.FromSlash(path.Clean("/"+name)))
}

// ReadFile implements FS.
func (d DirFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(d.path(name)) }

// WriteFile implements FS with write-to-temporary, fsync and rename.
func (d DirFS) WriteFile(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(d.path(name)), 0o755); err != nil {
		return err
	}
	return renameio.WriteFile(d.path(name), data, 0o644)
}

// Remove implements FS; a missing file is not an error.
func (d DirFS) Remove(name string) error {
	err := os.Remove(d.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// MkdirAll implements FS.
func (d DirFS) MkdirAll(dir string) error { return os.MkdirAll(d.path(dir), 0o755) }

// ReadDir implements FS.
func (d DirFS) ReadDir(dir string) ([]fs.DirEntry, error) { return os.ReadDir(d.path(dir)) }

// Exists implements FS, case-insensitively on the last element as FAT is.
func (d DirFS) Exists(name string) bool {
	if _, err := os.Stat(d.path(name)); err == nil {
		return true
	}
	ents, err := os.ReadDir(filepath.Dir(d.path(name)))
	if err != nil {
		return false
	}
	for _, e := range ents {
		if strings.EqualFold(e.Name(), path.Base(name)) {
			return true
		}
	}
	return false
}

// exists with a path check done case-insensitively at every level, since
// firmware and other OSes write EFI/Boot, EFI/BOOT or efi/boot.
func findCI(f FS, name string) (string, bool) {
	parts := strings.Split(strings.Trim(path.Clean("/"+name), "/"), "/")
	cur := ""
	for _, p := range parts {
		ents, err := f.ReadDir(orRoot(cur))
		if err != nil {
			return "", false
		}
		found := false
		for _, e := range ents {
			if strings.EqualFold(e.Name(), p) {
				cur = cur + "/" + e.Name()
				found = true
				break
			}
		}
		if !found {
			return "", false
		}
	}
	return cur, true
}

func orRoot(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

func writeNew(f FS, name string, data []byte) error {
	if err := f.WriteFile(name, data); err != nil {
		return fmt.Errorf("write %s on the ESP: %w", name, err)
	}
	return nil
}
