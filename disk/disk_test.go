package disk

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/layout"
)

func tool(t *testing.T, name string) string {
	t.Helper()
	return testenv.Tool(t, name)
}

func newDiskFile(t *testing.T, size int64) (*Disk, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	d, err := OpenDisk(p, OpenOptions{Write: true, Create: true, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, p
}

func TestWriteGPTIsCleanForSgdiskAndReadsBack(t *testing.T) {
	sgdisk := tool(t, "sgdisk")
	d, p := newDiskFile(t, 1<<30)
	// Boot code in the MBR must survive the GPT write.
	code := bytes.Repeat([]byte{0xEB}, 440)
	d.WriteAt(code, 0)
	tab, err := layout.Place(diskTestLayout(), d.Size(), d.SectorSize())
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteGPT(d, tab); err != nil {
		t.Fatal(err)
	}
	d.Sync()
	out, err := exec.Command(sgdisk, "-v", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v: %v\n%s", err, out)
	}
	out, _ = exec.Command(sgdisk, "-i", "2", p).CombinedOutput()
	if !strings.Contains(string(out), tab.Partitions[1].GUID) || !strings.Contains(string(out), "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709") {
		t.Fatalf("sgdisk -i 2 does not show the root partition's GUIDs:\n%s", out)
	}
	guid, parts, err := ReadGPT(d)
	if err != nil {
		t.Fatal(err)
	}
	if guid != tab.DiskGUID || len(parts) != 3 {
		t.Fatalf("read back %s with %d partitions", guid, len(parts))
	}
	for i, q := range parts {
		w := tab.Partitions[i]
		if q.Start != w.Start || q.Len != w.Len || q.GUID != w.GUID || q.Type != w.Type || q.Name != w.Name {
			t.Errorf("partition %d read back as %+v, wrote %+v", i+1, q, w)
		}
	}
	got := make([]byte, 440)
	d.ReadAt(got, 0)
	if !bytes.Equal(got, code) {
		t.Error("the GPT write changed the MBR boot code")
	}
}

func TestReadGPTRefusesNonGPT(t *testing.T) {
	d, _ := newDiskFile(t, 8<<20)
	if _, _, err := ReadGPT(d); err == nil || !strings.Contains(err.Error(), ErrNoGPT.Error()) {
		t.Fatalf("empty disk: %v", err)
	}
}

func TestFATStateFilesAreFsckClean(t *testing.T) {
	fsck := tool(t, "fsck.vfat")
	d, p := newDiskFile(t, 256<<20)
	tab, err := layout.Place(layout.Layout{Partitions: []layout.Spec{{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: 100 << 20}}}, d.Size(), 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteGPT(d, tab); err != nil {
		t.Fatal(err)
	}
	esp := tab.Partitions[0]
	fat, err := FormatFAT(d, esp, "ESP")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 { // rewrites must not leak clusters
		if err := fat.WriteFile("imprint/state.json", bytes.Repeat([]byte{'a' + byte(i)}, 30000-i*5000)); err != nil {
			t.Fatal(err)
		}
	}
	fat2, err := OpenFAT(d, esp.Start, esp.Len)
	if err != nil {
		t.Fatal(err)
	}
	b, err := fat2.ReadFile("imprint/state.json")
	if err != nil || len(b) != 10000 || b[0] != 'e' {
		t.Fatalf("read back %d bytes, %v", len(b), err)
	}
	if fat2.Exists("imprint/state.json.new") {
		t.Error("temporary file left behind")
	}
	d.Sync()
	part := filepath.Join(t.TempDir(), "esp.img")
	extract(t, d, esp, part)
	out, err := exec.Command(fsck, "-n", part).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.vfat -n: %v\n%s", err, out)
	}
	_ = p
}

func extract(t *testing.T, d *Disk, p layout.Placed, out string) {
	t.Helper()
	b := make([]byte, p.Len)
	if _, err := d.ReadAt(b, p.Start); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFormatFATRefusesTooSmallESP(t *testing.T) {
	d, _ := newDiskFile(t, 64<<20)
	_, err := FormatFAT(d, layout.Placed{Spec: layout.Spec{Name: "esp"}, Start: 1 << 20, Len: 32 << 20}, "ESP")
	if err == nil || !strings.Contains(err.Error(), "at least 48.0 MiB") {
		t.Fatalf("32 MiB ESP: %v", err)
	}
}

func TestLocalFilesystems(t *testing.T) {
	tool(t, "mkfs.ext4")
	e2fsck := tool(t, "e2fsck")
	blkid := tool(t, "blkid")
	d, _ := newDiskFile(t, 256<<20)
	// Old data everywhere: the new filesystems must not depend on zeros.
	junk := bytes.Repeat([]byte("OLDDATA!"), 1<<17)
	for off := int64(0); off < d.Size(); off += int64(len(junk)) {
		d.WriteAt(junk, off)
	}
	swap := Section{D: d, Off: 1 << 20, Len: 64 << 20}
	ext := Section{D: d, Off: 65 << 20, Len: 128 << 20}
	if err := MakeSwap(swap, "swap"); err != nil {
		t.Fatal(err)
	}
	if err := MakeExt4(context.Background(), ext, "scratch", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	d.Sync()
	dir := t.TempDir()
	for _, c := range []struct {
		name, want string
		p          layout.Placed
	}{
		{"swap", `TYPE="swap"`, layout.Placed{Start: swap.Off, Len: swap.Len}},
		{"ext4", `TYPE="ext4"`, layout.Placed{Start: ext.Off, Len: ext.Len}},
	} {
		f := filepath.Join(dir, c.name)
		extract(t, d, c.p, f)
		out, _ := exec.Command(blkid, "-p", f).CombinedOutput()
		if !strings.Contains(string(out), c.want) {
			t.Errorf("blkid -p %s: %s", c.name, out)
		}
		if c.name == "ext4" {
			if out, err := exec.Command(e2fsck, "-fn", f).CombinedOutput(); err != nil {
				t.Errorf("e2fsck -fn: %v\n%s", err, out)
			}
		}
	}
}

func diskTestLayout() layout.Layout {
	return layout.Layout{Partitions: []layout.Spec{
		{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: 100 << 20},
		{Name: "root", Type: layout.TypeRootX86_64, Role: layout.RoleImage, Size: 300<<20 + 4096},
		{Name: "scratch", Type: layout.TypeLinuxGeneric, Role: layout.RoleLocal, Size: 64 << 20, Rest: true, Optional: true, FS: "ext4"},
	}}
}
