package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/layout"
)

// otherOSDisk makes a disk that already holds another system: an ESP made
// by mkfs.vfat with that system's loaders, and its root partition.
func otherOSDisk(t *testing.T, size int64) (disk string, espFiles map[string]string) {
	t.Helper()
	need(t, "sgdisk", "mkfs.vfat", "mcopy", "mmd")
	dir := t.TempDir()
	disk = filepath.Join(dir, "laptop.img")
	f, _ := os.Create(disk)
	f.Truncate(size)
	f.Close()
	if out, err := exec.Command("sgdisk", "-n", "1:1M:+100M", "-t", "1:ef00", "-c", "1:EFI system", "-n", "2:0:+64M", "-t", "2:8304", "-c", "2:other-root", disk).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	esp := filepath.Join(dir, "esp.img")
	f, _ = os.Create(esp)
	f.Truncate(100 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.vfat", "-F", "32", "-n", "SYSTEM", esp).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.vfat: %v %s", err, out)
	}
	espFiles = map[string]string{
		"EFI/otheros/grubx64.efi":         "MZ the other OS's grub",
		"EFI/Microsoft/Boot/bootmgfw.efi": "MZ windows boot manager",
		"EFI/Microsoft/Boot/BCD":          "boot configuration data",
		"loader/entries/other.conf":       "title Other\nefi /EFI/otheros/grubx64.efi\n",
	}
	for p, content := range espFiles {
		src := filepath.Join(dir, "src")
		os.WriteFile(src, []byte(content), 0o644)
		parts := strings.Split(p, "/")
		for i := 1; i < len(parts); i++ {
			exec.Command("mmd", "-D", "s", "-i", esp, "::/"+strings.Join(parts[:i], "/")).Run()
		}
		if out, err := exec.Command("mcopy", "-i", esp, src, "::/"+p).CombinedOutput(); err != nil {
			t.Fatalf("mcopy %s: %v %s", p, err, out)
		}
	}
	b, _ := os.ReadFile(esp)
	df, _ := os.OpenFile(disk, os.O_RDWR, 0)
	df.WriteAt(b, 1<<20)
	rnd := make([]byte, 64<<20)
	copy(rnd, []byte("other root"))
	for i := range rnd {
		rnd[i] = byte(i*7 + i/4096)
	}
	df.WriteAt(rnd, 101<<20)
	df.Close()
	return disk, espFiles
}

func partitionHashes(t *testing.T, path string) map[string]string {
	t.Helper()
	d, err := disk.OpenDisk(path, disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, parts, err := disk.ReadGPT(d)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range parts {
		out[p.GUID] = fmt.Sprintf("%d+%d %s %s", p.Start, p.Len, p.Type, sha256Range(t, path, p.Start, p.Len))
	}
	return out
}

func TestKeepExistingLeavesEveryOtherByteAlone(t *testing.T) {
	need(t, "mkfs.ext4", "fsck.vfat")
	target, espFiles := otherOSDisk(t, 700<<20)
	before := partitionHashes(t, target)
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	makeRootfs(t, rootfs, 1<<20)
	b := buildImage(t, "--store", filepath.Join(dir, "store"), "--name", "shared", "--rootfs", rootfs, "--cmdline", "console=ttyS0 ro")

	// A target with too little room left says so, with sizes, and stays as it was.
	small, _ := otherOSDisk(t, 180<<20)
	smallBefore := fileSum(t, small)
	code, _, errs := run(t, "deploy", "--from", b.store, "--image", b.name, "--disk", small, "--keep-existing", "--yes")
	if code == 0 || !strings.Contains(errs, "largest free region is") || !strings.Contains(errs, "the image needs") {
		t.Fatalf("no room: exit %d %s", code, errs)
	}
	if fileSum(t, small) != smallBefore {
		t.Fatal("a refused dual-boot deploy changed the disk")
	}

	mustRun(t, "deploy", "--from", b.store, "--image", b.name, "--disk", target, "--keep-existing", "--yes")
	after := partitionHashes(t, target)
	espGUID := ""
	d, _ := disk.OpenDisk(target, disk.OpenOptions{})
	_, parts, _ := disk.ReadGPT(d)
	for _, p := range parts {
		if p.Type == layout.TypeESP {
			espGUID = p.GUID
		}
	}
	for guid, h := range before {
		if guid == espGUID {
			continue // files are checked one by one below
		}
		if after[guid] != h {
			t.Errorf("pre-existing partition %s changed: %s -> %s", guid, h, after[guid])
		}
	}
	if len(after) <= len(before) {
		t.Fatalf("no partitions were added: %v", after)
	}
	var esp layout.GPTPartition
	for _, p := range parts {
		if p.GUID == espGUID {
			esp = p
		}
	}
	fat, err := disk.OpenFAT(d, esp.Start, esp.Len)
	if err != nil {
		t.Fatal(err)
	}
	for p, content := range espFiles {
		got, err := fat.ReadFile(p)
		if err != nil || string(got) != content {
			t.Errorf("pre-existing ESP file %s: %q, %v", p, got, err)
		}
	}
	if fat.Exists("EFI/BOOT/BOOTX64.EFI") {
		// There was none: imprint may add the fallback loader, but only then.
		t.Log("imprint added the fallback loader (the target had none)")
	}
	m, err := bootloader.ReadMenu(fat)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"local", "chainload-otheros", "chainload-microsoft"} {
		if _, ok := m.Find(id); !ok {
			t.Errorf("menu lacks %s: %+v", id, m.Entries)
		}
	}
	d.Close()
	espImg := filepath.Join(t.TempDir(), "esp")
	extractRange(t, target, esp.Start, esp.Len, espImg)
	if out, err := exec.Command("fsck.vfat", "-n", espImg).CombinedOutput(); err != nil {
		t.Errorf("fsck.vfat -n on the shared ESP: %v\n%s", err, out)
	}
	if code, out, _ := run(t, "verify", "--disk", target); code != 0 {
		t.Fatalf("verify: %d %s", code, out)
	}
}
