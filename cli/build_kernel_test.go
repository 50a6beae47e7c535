package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildSaysWhichKernel checks that build names the boot files it took
// from the tree, and that --no-kernel builds a tree without any.
func TestBuildSaysWhichKernel(t *testing.T) {
	need(t, "mkfs.ext4")
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "boot/kernels"), 0o755)
	os.WriteFile(filepath.Join(tree, "boot/kernels/k-6.1"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(tree, "boot/kernels/i-6.1"), []byte("initrd"), 0o644)
	os.Symlink("/boot/kernels/k-6.1", filepath.Join(tree, "boot/vmlinuz"))
	os.Symlink("kernels/i-6.1", filepath.Join(tree, "boot/initrd.img"))
	out := mustRun(t, "build", "--store", filepath.Join(dir, "store"), "--name", "k", "--rootfs", tree)
	for _, want := range []string{
		"  kernel  /boot/vmlinuz -> /boot/kernels/k-6.1 (in " + tree + ")\n",
		"  initrd  /boot/initrd.img -> /boot/kernels/i-6.1\n",
		"  cmdline \"ro\" (default)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("build output lacks %q:\n%s", want, out)
		}
	}

	empty := filepath.Join(dir, "empty")
	os.MkdirAll(filepath.Join(empty, "etc"), 0o755)
	out = mustRun(t, "build", "--store", filepath.Join(dir, "store"), "--name", "nok", "--rootfs", empty, "--no-kernel")
	if !strings.Contains(out, "  no kernel (--no-kernel)\n") {
		t.Errorf("build output does not say the image has no kernel:\n%s", out)
	}
}
