package agent

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/imprint-dev/imprint/agent/initramfs"
	"github.com/imprint-dev/imprint/agent/kmod"
	"github.com/imprint-dev/imprint/image"
)

// InitrdOptions say what goes into the agent initramfs.
type InitrdOptions struct {
	// Self is a statically linked imprint binary; it becomes /init.
	Self string
	// ModulesDir is the kernel's /lib/modules/<release> directory.
	ModulesDir string
	// Release is the kernel release; default: the directory's name.
	Release string
	// Trust are minisign public keys (files or key text) put into the
	// initramfs as TrustFile; the agent then accepts only images they
	// signed, whatever the kernel command line says.
	Trust []string
}

// TrustFile holds the keys baked into an agent initramfs, one per line.
const TrustFile = "etc/imprint/trusted.pub"

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
	if len(o.Trust) > 0 {
		keys, err := trustLines(o.Trust)
		if err != nil {
			return nil, nil, err
		}
		a.File(TrustFile, 0o644, keys)
	}
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

// trustLines checks each key and gives them as one key per line.
func trustLines(specs []string) ([]byte, error) {
	var out []byte
	for _, s := range specs {
		if _, err := image.ParseTrust([]string{s}); err != nil {
			return nil, err
		}
		text := s
		if b, err := os.ReadFile(s); err == nil {
			text = lastKeyLine(string(b))
		}
		out = append(out, strings.TrimSpace(text)+"\n"...)
	}
	return out, nil
}

// lastKeyLine is the key of a minisign .pub file (its comment line dropped).
func lastKeyLine(s string) string {
	var key string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "untrusted comment:") {
			key = l
		}
	}
	return key
}
