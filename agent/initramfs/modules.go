package initramfs

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/imprint-dev/imprint/agent/kmod"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// AddModules puts mods (resolved from idx, files under modulesDir) into the
// archive under lib/modules/<release>/, uncompressed (finit_module on 6.1
// cannot take compressed modules), with an index trimmed to them so that
// kmod.Load reads it inside the initramfs.
func AddModules(a Archive, idx *kmod.Index, mods []kmod.Module, modulesDir, release string) error {
	modDir := "lib/modules/" + release
	for _, m := range mods {
		data, err := readModule(filepath.Join(modulesDir, m.Path))
		if err != nil {
			return err
		}
		a.File(modDir+"/"+plainModulePath(m.Path), 0o644, data)
	}
	dep, soft := idx.IndexFiles(mods, plainModulePath)
	a.File(modDir+"/modules.dep", 0o644, dep)
	a.File(modDir+"/modules.softdep", 0o644, soft)
	// Built-ins are needed so that a requested module compiled into another
	// kernel is skipped rather than unknown.
	if b, err := os.ReadFile(filepath.Join(modulesDir, "modules.builtin")); err == nil {
		a.File(modDir+"/modules.builtin", 0o644, b)
	}
	return nil
}

func plainModulePath(p string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+ext) {
			return strings.TrimSuffix(p, ext)
		}
	}
	return p
}

// readModule returns a module file's contents, decompressed.
func readModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".xz"):
		if r, err = xz.NewReader(f); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	case strings.HasSuffix(path, ".zst"):
		d, err := zstd.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer d.Close()
		r = d
	case strings.HasSuffix(path, ".gz"):
		if r, err = gzip.NewReader(f); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}
