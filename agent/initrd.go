package agent

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"

	"github.com/imprint-dev/imprint/agent/initramfs"
	"github.com/imprint-dev/imprint/agent/kmod"
)

// InitrdOptions say what goes into the agent initramfs.
type InitrdOptions struct {
	// Self is a statically linked imprint binary; it becomes /init.
	Self string
	// ModulesDir is the kernel's /lib/modules/<release> directory.
	ModulesDir string
	// Release is the kernel release; default: the directory's name.
	Release string
}

// BuildInitrd makes the agent initramfs: imprint as /init, the kernel
// modules of Modules (with their dependencies) that this kernel has.
func BuildInitrd(o InitrdOptions) ([]byte, []kmod.Module, error) {
	if o.Release == "" {
		o.Release = filepath.Base(filepath.Clean(o.ModulesDir))
	}
	if err := checkStatic(o.Self); err != nil {
		return nil, nil, err
	}
	self, err := os.ReadFile(o.Self)
	if err != nil {
		return nil, nil, err
	}
	idx, err := kmod.Load(o.ModulesDir)
	if err != nil {
		return nil, nil, fmt.Errorf("kernel modules in %s: %w", o.ModulesDir, err)
	}
	var names []string
	for _, n := range Modules {
		if _, err := idx.Resolve(n); err == nil {
			names = append(names, n)
		}
	}
	mods, err := idx.Resolve(names...)
	if err != nil {
		return nil, nil, err
	}
	a := initramfs.Archive{}
	for _, d := range []string{"dev", "proc", "sys", "run", "newroot", "tmp"} {
		a.Dir(d, 0o755)
	}
	a.CharDev("dev/console", 0o600, 5, 1)
	a.File("init", 0o755, self)
	if err := initramfs.AddModules(a, idx, mods, o.ModulesDir, o.Release); err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := a.Write(zw); err != nil {
		return nil, nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), mods, nil
}

// checkStatic refuses a dynamically linked imprint: the initramfs has no
// libc. Build with CGO_ENABLED=0 (make build does).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the agent needs a static imprint (CGO_ENABLED=0 go build)", path)
		}
	}
	return nil
}
