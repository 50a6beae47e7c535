package cli

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/layout"
)

// editESP changes files on a deployed disk's ESP, as someone with the disk
// in hand could.
func editESP(t *testing.T, p string, edit func(f *disk.FAT)) {
	t.Helper()
	od := onDisk(t, p)
	espP, _ := od.State.Table.ByRole(layout.RoleESP)
	d, err := disk.OpenDisk(p, disk.OpenOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fat, err := disk.OpenFAT(d, espP.Start, espP.Len)
	if err != nil {
		t.Fatal(err)
	}
	edit(fat)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

func flipFileByte(t *testing.T, f *disk.FAT, name string) {
	t.Helper()
	b, err := f.ReadFile(name)
	if err != nil {
		t.Fatalf("ESP %s: %v", name, err)
	}
	b[len(b)/2] ^= 1
	if err := f.WriteFile(name, b); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyChecksTheESPsFiles: verify compares the image's boot files and
// loaders on the ESP (kept and installed copies) with the manifest, and
// checks the menu's changing files for what they may hold: one changed
// byte anywhere is drift naming the file; a changed default and a new
// random seed are not.
func TestVerifyChecksTheESPsFiles(t *testing.T) {
	b := treeImage(t)
	dir := t.TempDir()
	master := filepath.Join(dir, "master.img")
	mustRun(t, "deploy", "--from", b.store, "--image", b.name, "--disk", master, "--size", "200M", "--yes")
	if code, out, errs := run(t, "verify", "--disk", master); code != 0 || !strings.Contains(out, "0 drifted, 0 missing") {
		t.Fatalf("verify of a fresh deploy: exit %d\n%s%s", code, out, errs)
	}
	for _, tc := range []struct {
		name  string
		edit  func(t *testing.T, f *disk.FAT)
		after []string // commands run on the disk after the edit
		want  string   // "" for identical, else the file verify must name
	}{
		{"kernel", func(t *testing.T, f *disk.FAT) { flipFileByte(t, f, "/EFI/imprint/v1/vmlinuz") }, nil, "/EFI/imprint/v1/vmlinuz"},
		{"initrd", func(t *testing.T, f *disk.FAT) { flipFileByte(t, f, "/EFI/imprint/v1/initrd.img") }, nil, "/EFI/imprint/v1/initrd.img"},
		{"agent", func(t *testing.T, f *disk.FAT) { flipFileByte(t, f, "/EFI/imprint/v1/agent.img") }, nil, "/EFI/imprint/v1/agent.img"},
		{"kept loader", func(t *testing.T, f *disk.FAT) { flipFileByte(t, f, "/imprint/loaders/systemd-bootx64.efi") }, nil, "/imprint/loaders/systemd-bootx64.efi"},
		{"installed loader", func(t *testing.T, f *disk.FAT) { flipFileByte(t, f, "/EFI/systemd/systemd-bootx64.efi") }, nil, "/EFI/systemd/systemd-bootx64.efi"},
		{"fallback loader", func(t *testing.T, f *disk.FAT) { flipFileByte(t, f, "/EFI/BOOT/BOOTX64.EFI") }, nil, "/EFI/BOOT/BOOTX64.EFI"},
		{"iPXE", func(t *testing.T, f *disk.FAT) { flipFileByte(t, f, "/EFI/imprint/ipxe.efi") }, nil, "/EFI/imprint/ipxe.efi"},
		{"kernel removed", func(t *testing.T, f *disk.FAT) { f.Remove("/EFI/imprint/v1/vmlinuz") }, nil, "/EFI/imprint/v1/vmlinuz"},
		{"entry edited", func(t *testing.T, f *disk.FAT) { flipFileByte(t, f, "/loader/entries/imprint-local.conf") }, nil, "/loader/entries/imprint-local.conf"},
		{"entry injected", func(t *testing.T, f *disk.FAT) {
			f.WriteFile("/loader/entries/imprint-evil.conf", []byte("title evil\nlinux /evil\n"))
		}, nil, "/loader/entries/imprint-evil.conf"},
		{"bad random seed", func(t *testing.T, f *disk.FAT) { f.WriteFile("/loader/random-seed", []byte("short")) }, nil, "/loader/random-seed"},
		{"a new seed and another default", func(t *testing.T, f *disk.FAT) {
			f.WriteFile("/loader/random-seed", make([]byte, 32))
		}, []string{"boot", "default", "netboot"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "d.img")
			if out, err := exec.Command("cp", "--sparse=always", master, p).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			editESP(t, p, func(f *disk.FAT) { tc.edit(t, f) })
			if tc.after != nil {
				mustRun(t, append(tc.after, "--disk", p)...)
			}
			code, out, errs := run(t, "verify", "--disk", p)
			if tc.want == "" {
				if code != 0 {
					t.Fatalf("verify: exit %d, want 0\n%s%s", code, out, errs)
				}
				return
			}
			if code != 1 || !strings.Contains(out, tc.want) || !strings.Contains(out, "DRIFTED") {
				t.Fatalf("verify: exit %d, want 1 naming %s\n%s%s", code, tc.want, out, errs)
			}
		})
	}
}
