package cli

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/ondisk"
)

// lyingAbout serves store honestly except the chunks in bad, for which it
// sends another chunk's stored bytes: well-formed, wrong content.
func lyingAbout(store string, bad map[string]bool, other string) http.Handler {
	real := &netboot.HTTP{Store: store, Decider: netboot.Static{}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bad[filepath.Base(r.URL.Path)] {
			b, _ := os.ReadFile(other)
			w.Write(b)
			return
		}
		real.ServeHTTP(w, r)
	})
}

// espFiles reads files from a deployed disk's ESP.
func espFiles(t *testing.T, p string, names ...string) map[string][]byte {
	t.Helper()
	od := onDisk(t, p)
	espP, _ := od.State.Table.ByRole(layout.RoleESP)
	d, err := disk.OpenDisk(p, disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fat, err := disk.OpenFAT(d, espP.Start, espP.Len)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		b, err := fat.ReadFile(n)
		if err != nil {
			t.Fatalf("ESP %s: %v", n, err)
		}
		out[n] = b
	}
	return out
}

// TestALyingPeerCannotChangeTheLoaders: a peer that sends a changed
// systemd-boot and iPXE is passed over for those chunks; the disk gets the
// master's loaders, byte for byte, from the honest store.
func TestALyingPeerCannotChangeTheLoaders(t *testing.T) {
	b := treeImage(t)
	bad := map[string]bool{}
	for _, n := range []string{image.LoaderSystemdBoot, image.LoaderIPXEEFI} {
		c := b.m.Loaders[n]
		if c == nil {
			t.Fatalf("the build host gave no %s (install systemd-boot-efi and ipxe)", n)
		}
		for _, h := range c.Chunks {
			bad[h] = true
		}
	}
	liar := httptestServer(t, lyingAbout(b.store, bad, chunkPath(b, 1)))
	p := filepath.Join(t.TempDir(), "d.img")
	code, out, errs := run(t, "deploy", "--from", liar.URL, "--from", b.store, "--image", b.name, "--disk", p, "--size", "100M", "--yes")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(errs, "trying the next source") {
		t.Errorf("no refusal of the lying peer's chunks reported:\n%s", errs)
	}
	sum := func(n string) string { return b.m.Loaders[n].SHA256 }
	files := espFiles(t, p, "/EFI/systemd/systemd-bootx64.efi", "/EFI/BOOT/BOOTX64.EFI", "/EFI/imprint/ipxe.efi",
		ondisk.LoadersDir+"/"+image.LoaderSystemdBoot, ondisk.LoadersDir+"/"+image.LoaderIPXEEFI, ondisk.LoadersDir+"/"+image.LoaderGrubBIOSCore)
	for f, want := range map[string]string{
		"/EFI/systemd/systemd-bootx64.efi":                 sum(image.LoaderSystemdBoot),
		"/EFI/BOOT/BOOTX64.EFI":                            sum(image.LoaderSystemdBoot),
		"/EFI/imprint/ipxe.efi":                            sum(image.LoaderIPXEEFI),
		ondisk.LoadersDir + "/" + image.LoaderSystemdBoot:  sum(image.LoaderSystemdBoot),
		ondisk.LoadersDir + "/" + image.LoaderIPXEEFI:      sum(image.LoaderIPXEEFI),
		ondisk.LoadersDir + "/" + image.LoaderGrubBIOSCore: sum(image.LoaderGrubBIOSCore),
	} {
		if got := image.HashBytes(files[f]); got != want {
			t.Errorf("ESP %s: sha256 %s, the manifest says %s", f, got, want)
		}
	}
	// BIOS: the bios-boot partition holds the image's core.img, patched
	// only in its blocklist (the last 24 bytes of its first sector).
	core := files[ondisk.LoadersDir+"/"+image.LoaderGrubBIOSCore]
	bb, ok := onDisk(t, p).State.Table.ByRole(layout.RoleBIOSBoot)
	if !ok {
		t.Fatal("an image-file deploy has no bios-boot partition")
	}
	raw, _ := os.ReadFile(p)
	got := raw[bb.Start : bb.Start+int64(len(core))]
	if !bytes.Equal(got[:512-24], core[:512-24]) || !bytes.Equal(got[512:], core[512:]) {
		t.Error("the bios-boot partition does not hold the image's core.img")
	}
	// The deployed disk serves and exports its loaders like any content.
	exp := filepath.Join(t.TempDir(), "exported")
	mustRun(t, "export", "--disk", p, "--out", exp)
	mustRun(t, "deploy", "--from", exp, "--image", b.name, "--disk", filepath.Join(t.TempDir(), "again.img"), "--size", "100M", "--yes")
}

// TestBuildWithoutALoader: a build host without GRUB notes it, the image
// carries none, and a deploy that needs it is refused before the disk is
// touched; one that does not need it works (UEFI only, said so).
func TestBuildWithoutALoader(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "host")
	for p, src := range map[string]string{
		"usr/lib/systemd/boot/efi/systemd-bootx64.efi": "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
		"usr/lib/ipxe/ipxe.efi":                        "/usr/lib/ipxe/ipxe.efi",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			testenv.Skipf(t, "%s: %v (install systemd-boot-efi and ipxe)", src, err)
		}
		os.MkdirAll(filepath.Join(host, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(host, p), b, 0o644)
	}
	root := filepath.Join(dir, "root.img")
	randomFile(t, root, 1<<20)
	randomFile(t, filepath.Join(dir, "vmlinuz"), 100<<10)
	store := filepath.Join(dir, "store")
	code, out, errs := run(t, "build", "--store", store, "--name", "nogrub", "--version", "v1", "--partition", "root="+root,
		"--kernel", filepath.Join(dir, "vmlinuz"), "--loader-root", host)
	if code != 0 {
		t.Fatalf("build: exit %d\n%s%s", code, out, errs)
	}
	for _, n := range []string{image.LoaderGrubEFI, image.LoaderGrubBIOSCore, image.LoaderIPXEBIOS} {
		if !strings.Contains(errs, "note: no "+n+" on this host") {
			t.Errorf("build does not note the missing %s:\n%s", n, errs)
		}
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"grub", []string{"--bootloader", "grub"}, "--bootloader grub needs grubx64.efi, which this image does not carry"},
		{"bios", []string{"--firmware", "bios"}, "needs grub-i386-pc-boot.img, which this image does not carry"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "d.img")
			code, _, errs := run(t, append([]string{"deploy", "--from", store, "--image", "nogrub", "--disk", p, "--size", "900M", "--yes"}, c.args...)...)
			if code == 0 || !strings.Contains(errs, c.want) || !strings.Contains(errs, "--loader") {
				t.Fatalf("exit %d, want a refusal saying %q:\n%s", code, c.want, errs)
			}
			if fileSum(t, p) != "absent" {
				t.Error("a refused deploy created the disk")
			}
		})
	}
	p := filepath.Join(t.TempDir(), "d.img")
	code, out, errs = run(t, "deploy", "--from", store, "--image", "nogrub", "--disk", p, "--size", "900M", "--yes")
	if code != 0 || !strings.Contains(errs, "boots under UEFI only") {
		t.Fatalf("default deploy: exit %d, want success with a UEFI-only warning\n%s%s", code, out, errs)
	}
	menu := espFiles(t, p, bootloader.MenuFile)[bootloader.MenuFile]
	if !bytes.Contains(menu, []byte(`"firmware": "`+bootloader.UEFI+`"`)) {
		t.Errorf("menu is not UEFI only:\n%s", menu)
	}
}
