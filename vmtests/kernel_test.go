//go:build vmtest

package vmtests

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/qemu"
)

// TestPlainBootVmlinuzBoots builds from a tree whose kernel and initrd are
// only at plain /boot/vmlinuz and /boot/initrd.img (no version suffix): the
// image must carry them, and the deployed disk must boot through
// systemd-boot under OVMF. Before kernel discovery such a tree built an
// image without a kernel.
func TestPlainBootVmlinuzBoots(t *testing.T) {
	requireQEMU(t)
	fx := buildFixture(t)
	plainKernel := filepath.Join(fx.RootfsDir, "boot", "vmlinuz")
	plainInitrd := filepath.Join(fx.RootfsDir, "boot", "initrd.img")
	for from, to := range map[string]string{fx.Kernel: plainKernel, fx.Initrd: plainInitrd} {
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(fx.RootfsDir, "boot", "vmlinuz-*")); len(left) != 0 {
		t.Fatalf("the tree still has versioned kernels: %v", left)
	}

	store := filepath.Join(t.TempDir(), "store")
	out := imprint(t, "build", "--json", "--store", store, "--name", "fixture", "--rootfs", fx.RootfsDir, "--cmdline", "console=ttyS0 ro panic=1")
	var res struct{ Version, Kernel, Initrd string }
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("build --json: %v\n%s", err, out)
	}
	if res.Kernel != "/boot/vmlinuz" || res.Initrd != "/boot/initrd.img" {
		t.Fatalf("build took kernel %q initrd %q, want /boot/vmlinuz and /boot/initrd.img", res.Kernel, res.Initrd)
	}
	raw, err := os.ReadFile(filepath.Join(store, "images", "fixture", res.Version, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man struct {
		Boot struct{ Kernel, Initrd struct{ SHA256 string } }
	}
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatal(err)
	}
	if got, want := man.Boot.Kernel.SHA256, fileSHA256(t, plainKernel); got != want {
		t.Errorf("the image's kernel hashes to %q, the tree's /boot/vmlinuz to %s", got, want)
	}
	if got, want := man.Boot.Initrd.SHA256, fileSHA256(t, plainInitrd); got != want {
		t.Errorf("the image's initrd hashes to %q, the tree's /boot/initrd.img to %s", got, want)
	}

	disk := filepath.Join(t.TempDir(), "disk.img")
	imprint(t, "deploy", "--from", store, "--image", "fixture", "--disk", disk, "--yes", "--boot-timeout", "0", "--size", "1G", "--firmware", "uefi")
	root := partitionNamed(t, disk, "root")
	console := bootsLocal(t, qemu.UEFI, disk, root, fx.FileSHA256)
	if c := cmdlineOf(console); !strings.Contains(c, "root=PARTUUID="+strings.ToLower(root.GUID)+" console=ttyS0 ro panic=1") {
		t.Errorf("local entry command line %q", c)
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
