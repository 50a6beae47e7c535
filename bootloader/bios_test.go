package bootloader

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/layout"
)

const biosTestConfig = "/EFI/imprint/grub.cfg"

func biosTestTool(t *testing.T, name string) string {
	t.Helper()
	return testenv.Tool(t, name)
}

// biosTestGrub skips tests that build a real core.img where GRUB i386-pc
// is not installed.
func biosTestGrub(t *testing.T) {
	t.Helper()
	biosTestTool(t, "grub-mkimage")
	testenv.NeedFile(t, filepath.Join(biosDefaultGrubDir, "boot.img"), "grub-pc-bin")
}

// biosTestDisk makes a 64 MiB image file with GPT [bios-boot 1 MiB, esp
// 48 MiB]. shrinkBIOS, if non-zero, makes the BIOS boot partition that
// many bytes instead (in the table written to disk too).
func biosTestDisk(t *testing.T, shrinkBIOS int64) (*disk.Disk, string, *layout.Table) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	d, err := disk.OpenDisk(p, disk.OpenOptions{Write: true, Create: true, Size: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	l := layout.Layout{Partitions: []layout.Spec{
		{Name: "bios", Type: layout.TypeBIOSBoot, Role: layout.RoleBIOSBoot, Size: 1 << 20},
		{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: 48 << 20},
	}}
	tab, err := layout.Place(l, d.Size(), d.SectorSize())
	if err != nil {
		t.Fatal(err)
	}
	if shrinkBIOS != 0 {
		tab.Partitions[0].Len = shrinkBIOS
	}
	if err := disk.WriteGPT(d, tab); err != nil {
		t.Fatal(err)
	}
	return d, p, tab
}

func biosReadAt(t *testing.T, d disk.Device, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := d.ReadAt(b, off); err != nil {
		t.Fatalf("read %d bytes at %d: %v", n, off, err)
	}
	return b
}

func TestInstallBIOSWritesBootChain(t *testing.T) {
	biosTestGrub(t)
	sgdisk := biosTestTool(t, "sgdisk")
	ctx := context.Background()
	d, path, tab := biosTestDisk(t, 0)
	bios, _ := tab.ByRole(layout.RoleBIOSBoot)

	// Old boot code and a disk signature: the code must be replaced, the
	// signature and the partition table kept.
	if _, err := d.WriteAt(bytes.Repeat([]byte{0xcc}, 440), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte{0xde, 0xad, 0xbe, 0xef}, 440); err != nil {
		t.Fatal(err)
	}
	before := biosReadAt(t, d, 0, 512)
	_, gptBefore, err := disk.ReadGPT(d)
	if err != nil {
		t.Fatal(err)
	}

	tmp := t.TempDir()
	// The build-time images, as an image carries them, unpatched.
	bootImg, core, err := BuildGrubBIOS(ctx, GrubBIOSBuild{ConfigPath: biosTestConfig, TmpDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("BuildGrubBIOS left %d files in TmpDir", len(ents))
	}
	coreCopy, bootCopy := bytes.Clone(core), bytes.Clone(bootImg)
	o := BIOSOptions{BootImg: bootImg, CoreImg: core}
	if err := InstallBIOS(ctx, d, bios, o); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(core, coreCopy) || !bytes.Equal(bootImg, bootCopy) {
		t.Errorf("InstallBIOS patched the image's loader bytes in place")
	}

	mbr := biosReadAt(t, d, 0, 512)
	if !bytes.Equal(mbr[440:], before[440:]) {
		t.Errorf("disk signature or partition table changed:\nbefore % x\nafter  % x", before[440:], mbr[440:])
	}
	if mbr[0x1fe] != 0x55 || mbr[0x1ff] != 0xaa {
		t.Errorf("MBR signature %x %x, want 55 aa", mbr[0x1fe], mbr[0x1ff])
	}
	if host, err := os.ReadFile(filepath.Join(biosDefaultGrubDir, "boot.img")); err != nil || !bytes.Equal(host, bootImg) {
		t.Errorf("BuildGrubBIOS's boot.img is not the host's (%v)", err)
	}
	want := bytes.Clone(bootImg[:440])
	copy(want[3:0x5a], before[3:0x5a]) // grub-setup keeps the disk's BPB bytes
	binary.LittleEndian.PutUint64(want[0x5c:], uint64(bios.Start/512))
	want[0x64] = 0xff
	want[0x66], want[0x67] = 0x90, 0x90
	if !bytes.Equal(mbr[:440], want) {
		t.Errorf("MBR boot code differs from boot.img patched as grub-setup does")
	}
	if got := binary.LittleEndian.Uint64(mbr[0x5c:]); got != uint64(bios.Start/512) {
		t.Errorf("kernel sector %d, want the BIOS boot partition's first LBA %d", got, bios.Start/512)
	}

	// Follow the chain as the BIOS and diskboot.img do: the MBR's kernel
	// sector, then the blocklist in that sector, must give core.img back.
	nsec := (int64(len(core)) + 511) / 512
	first := int64(binary.LittleEndian.Uint64(mbr[0x5c:]))
	sec0 := biosReadAt(t, d, first*512, 512)
	list := sec0[512-12:]
	start := binary.LittleEndian.Uint64(list)
	n := binary.LittleEndian.Uint16(list[8:])
	seg := binary.LittleEndian.Uint16(list[10:])
	if start != uint64(first+1) || int64(n) != nsec-1 || seg != 0x820 {
		t.Errorf("blocklist {start %d, len %d, segment %#x}, want {%d, %d, 0x820}", start, n, seg, first+1, nsec-1)
	}
	if term := sec0[512-24 : 512-12]; !bytes.Equal(term, make([]byte, 12)) {
		t.Errorf("no blocklist terminator before the first entry: % x", term)
	}
	if !bytes.Equal(sec0[:512-24], core[:512-24]) {
		t.Errorf("core.img's first sector differs outside the blocklist")
	}
	rest := biosReadAt(t, d, int64(start)*512, int64(n)*512)
	if !bytes.Equal(rest[:len(core)-512], core[512:]) || !bytes.Equal(rest[len(core)-512:], make([]byte, len(rest)-(len(core)-512))) {
		t.Errorf("the sectors the blocklist names are not core.img's (zero-padded) tail")
	}
	if end := (int64(start) + int64(n)) * 512; end > bios.Start+bios.Len {
		t.Errorf("core.img ends at byte %d, past the BIOS boot partition's end %d", end, bios.Start+bios.Len)
	}

	_, gptAfter, err := disk.ReadGPT(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(gptAfter) != len(gptBefore) {
		t.Fatalf("GPT has %d partitions after, %d before", len(gptAfter), len(gptBefore))
	}
	for i := range gptAfter {
		if gptAfter[i] != gptBefore[i] {
			t.Errorf("GPT entry %d changed: %+v -> %+v", i+1, gptBefore[i], gptAfter[i])
		}
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sgdisk, "-v", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v: %v\n%s", err, out)
	}

	// Running it again (a re-deploy) gives the same bytes.
	firstMBR := bytes.Clone(mbr)
	if err := InstallBIOS(ctx, d, bios, o); err != nil {
		t.Fatal(err)
	}
	if again := biosReadAt(t, d, 0, 512); !bytes.Equal(again, firstMBR) {
		t.Errorf("a second InstallBIOS changed the MBR")
	}
}

func TestInstallBIOSPartitionTooSmall(t *testing.T) {
	biosTestGrub(t)
	d, _, tab := biosTestDisk(t, 64<<10)
	bios, _ := tab.ByRole(layout.RoleBIOSBoot)
	before := biosReadAt(t, d, 0, 1<<20+64<<10)
	bootImg, core, err := BuildGrubBIOS(context.Background(), GrubBIOSBuild{ConfigPath: biosTestConfig, TmpDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	err = InstallBIOS(context.Background(), d, bios, BIOSOptions{BootImg: bootImg, CoreImg: core})
	if !errors.Is(err, ErrBIOSBootTooSmall) {
		t.Fatalf("got %v, want ErrBIOSBootTooSmall", err)
	}
	// Both sizes, so the user knows how much to add.
	if !strings.Contains(err.Error(), "65536 bytes") || !strings.Contains(err.Error(), "core.img needs") {
		t.Errorf("error does not name both sizes: %v", err)
	}
	if !bytes.Equal(biosReadAt(t, d, 0, int64(len(before))), before) {
		t.Errorf("a failed InstallBIOS wrote to the disk")
	}
}

func TestInstallBIOSRefusesWhatIsNotABIOSBootPartition(t *testing.T) {
	d, _, tab := biosTestDisk(t, 0)
	bios, _ := tab.ByRole(layout.RoleBIOSBoot)
	esp, _ := tab.ByRole(layout.RoleESP)
	moved := bios
	moved.Start += 1 << 20 // not where the disk's GPT has it
	o := BIOSOptions{}
	before := biosReadAt(t, d, 0, 2<<20)
	for _, c := range []struct {
		name string
		p    layout.Placed
		want string
	}{
		{"none", layout.Placed{}, "add a 1 MiB partition of type bios-boot"},
		{"esp", esp, `partition "esp" has type esp`},
		{"not on disk", moved, "the disk's GPT has no bios-boot partition at byte 2097152"},
	} {
		err := InstallBIOS(context.Background(), d, c.p, o)
		if !errors.Is(err, ErrNoBIOSBoot) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrNoBIOSBoot saying %q", c.name, err, c.want)
		}
	}
	if !bytes.Equal(biosReadAt(t, d, 0, 2<<20), before) {
		t.Errorf("a refused InstallBIOS wrote to the disk")
	}
}

func TestInstallBIOSWithoutGrubSaysWhatToInstall(t *testing.T) {
	d, _, tab := biosTestDisk(t, 0)
	bios, _ := tab.ByRole(layout.RoleBIOSBoot)

	t.Run("image without the BIOS loaders", func(t *testing.T) {
		before := biosReadAt(t, d, 0, 2<<20)
		err := InstallBIOS(context.Background(), d, bios, BIOSOptions{})
		if !errors.Is(err, ErrGrubPCMissing) || !strings.Contains(err.Error(), "grub-i386-pc-core.img") {
			t.Errorf("got %v", err)
		}
		if !bytes.Equal(biosReadAt(t, d, 0, 2<<20), before) {
			t.Errorf("a refused InstallBIOS wrote to the disk")
		}
	})
	t.Run("no grub-mkimage", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, _, err := BuildGrubBIOS(context.Background(), GrubBIOSBuild{ConfigPath: biosTestConfig})
		if !errors.Is(err, ErrGrubPCMissing) || !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "install grub-pc-bin") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("no i386-pc files", func(t *testing.T) {
		biosTestTool(t, "grub-mkimage")
		dir := t.TempDir()
		_, _, err := BuildGrubBIOS(context.Background(), GrubBIOSBuild{ConfigPath: biosTestConfig, GrubDir: dir})
		if !errors.Is(err, ErrGrubPCMissing) || !strings.Contains(err.Error(), "install grub-pc-bin") || !strings.Contains(err.Error(), dir) {
			t.Errorf("got %v", err)
		}
	})
}

func TestBIOSConfigPath(t *testing.T) {
	for _, p := range []string{"", "EFI/imprint/grub.cfg", "/", "/EFI/../grub.cfg", "/EFI//grub.cfg", "/EFI/my grub/grub.cfg", `/EFI/a"b.cfg`, "/EFI/$x.cfg", "/EFI/a;b.cfg"} {
		if _, err := biosBuildCore(context.Background(), GrubBIOSBuild{ConfigPath: p}); err == nil || !strings.Contains(err.Error(), "config path") {
			t.Errorf("%q: got %v, want a config path error", p, err)
		}
	}
	cfg := biosEarlyConfig(biosTestConfig)
	for _, line := range []string{
		"search --no-floppy --file --set=root /EFI/imprint/grub.cfg\n",
		"configfile ($root)/EFI/imprint/grub.cfg\n",
		`echo "imprint: GRUB (BIOS) could not load /EFI/imprint/grub.cfg`,
	} {
		if !strings.Contains(cfg, line) {
			t.Errorf("early config lacks %q:\n%s", line, cfg)
		}
	}
}

func TestBIOSCoreBuildsAndFits(t *testing.T) {
	biosTestGrub(t)
	core, err := biosBuildCore(context.Background(), GrubBIOSBuild{ConfigPath: biosTestConfig, TmpDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	// A 1 MiB BIOS boot partition is the usual size; stay well inside it
	// and inside what diskboot.img can load.
	if len(core) > 512<<10 || (len(core)+511)/512 > biosMaxCoreSectors {
		t.Errorf("core.img is %d bytes", len(core))
	}
	t.Logf("core.img: %d bytes, %d sectors", len(core), (len(core)+511)/512)
}
