//go:build vmtest

package vmtests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	imdisk "github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// firmwareBoot is how long a boot through firmware and a boot loader may
// take before the initrd speaks: OVMF + systemd-boot or GRUB took 11-22 s
// here, SeaBIOS + GRUB 11-13 s; runs swing 2x.
const firmwareBoot = 150 * time.Second

// image is the fixture built into a store.
type fxImage struct {
	fx    *fixture.Fixture
	store string
}

func buildImage(t *testing.T, cmdline string) fxImage {
	t.Helper()
	fx := buildFixture(t)
	store := filepath.Join(t.TempDir(), "store")
	imprint(t, "build", "--store", store, "--name", "fixture", "--rootfs", fx.RootfsDir, "--cmdline", cmdline)
	return fxImage{fx: fx, store: store}
}

func (im fxImage) deploy(t *testing.T, disk string, args ...string) {
	t.Helper()
	imprint(t, append([]string{"deploy", "--from", im.store, "--image", "fixture", "--disk", disk, "--yes", "--boot-timeout", "0"}, args...)...)
}

// bootsLocal boots disk and checks that the initrd mounted this disk's root
// partition and that the root is the image: the markers in order, then a
// clean power-off. It returns the console.
func bootsLocal(t *testing.T, fw qemu.Firmware, disk string, root diskPartition, sha string, extra ...qemu.Marker) string {
	t.Helper()
	guid := strings.ToLower(root.GUID)
	begin := time.Now()
	vm := startVM(t, qemu.Config{Firmware: fw, Disks: []qemu.Disk{{Path: disk}}, Snapshot: true})
	markers := []qemu.Marker{
		{Text: fixture.InitrdRootMarker + guid + " is /dev/vda" + strconv.Itoa(root.Index), Timeout: firmwareBoot},
		{Text: fixture.RootCmdlineMarker, Timeout: nextMarkerTimeout},
		{Text: fixture.RootSHA256Marker + sha, Timeout: nextMarkerTimeout},
	}
	markers = append(markers, extra...)
	markers = append(markers, qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout})
	if err := vm.Expect(t.Context(), markers...); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(t.Context()); err != nil {
		t.Fatalf("the guest should power off cleanly: %v", err)
	}
	t.Logf("%s boot to %q in %v", fw, fixture.RootOKMarker, time.Since(begin).Round(time.Second))
	return vm.Console()
}

func cmdlineOf(console string) string {
	for _, l := range strings.Split(console, "\n") {
		if i := strings.Index(l, fixture.RootCmdlineMarker); i >= 0 {
			return strings.TrimSpace(l[i+len(fixture.RootCmdlineMarker):])
		}
	}
	return ""
}

// Tests 1 and 3: one disk (firmware both, the default for image files)
// boots its local entry through systemd-boot under OVMF and through GRUB
// i386-pc under SeaBIOS.
func TestLocalEntryBootsOnUEFIAndBIOS(t *testing.T) {
	requireQEMU(t)
	im := buildImage(t, "console=ttyS0 ro panic=1")
	disk := filepath.Join(t.TempDir(), "disk.img")
	im.deploy(t, disk, "--size", "1G")
	root := partitionNamed(t, disk, "root")
	before := hashRange(t, disk, root.Start, root.Len)
	for _, fw := range []qemu.Firmware{qemu.UEFI, qemu.BIOS} {
		t.Run(fw.String(), func(t *testing.T) {
			console := bootsLocal(t, fw, disk, root, im.fx.FileSHA256)
			if c := cmdlineOf(console); !strings.Contains(c, "root=PARTUUID="+strings.ToLower(root.GUID)+" console=ttyS0 ro panic=1") {
				t.Errorf("local entry command line %q", c)
			}
			if fw == qemu.BIOS && !strings.Contains(console, "GRUB") && !strings.Contains(console, "Booting") {
				t.Logf("console:\n%s", console)
			}
		})
	}
	if after := hashRange(t, disk, root.Start, root.Len); after != before {
		t.Error("the root partition changed")
	}
	imprint(t, "verify", "--disk", disk)
}

// Test 2: the same with GRUB as the UEFI boot loader.
func TestLocalEntryBootsWithGrubEFI(t *testing.T) {
	requireQEMU(t)
	im := buildImage(t, "console=ttyS0 ro panic=1")
	disk := filepath.Join(t.TempDir(), "disk.img")
	im.deploy(t, disk, "--size", "1G", "--bootloader", "grub", "--firmware", "uefi")
	root := partitionNamed(t, disk, "root")
	bootsLocal(t, qemu.UEFI, disk, root, im.fx.FileSHA256)
}

// Test 4: `imprint boot default` decides what boots next; the diskless
// entry's kernel command line carries imprint.source.
func TestDefaultEntryChoosesTheNextBoot(t *testing.T) {
	requireQEMU(t)
	im := buildImage(t, "console=ttyS0 ro panic=1")
	disk := filepath.Join(t.TempDir(), "disk.img")
	source := "http://10.0.2.2:8080/store"
	// One slot: this test switches between the plain local and diskless entries.
	im.deploy(t, disk, "--size", "1G", "--firmware", "uefi", "--diskless-url", source, "--slots", "1")
	root := partitionNamed(t, disk, "root")
	guid := strings.ToLower(root.GUID)

	var menu bootloader.Menu
	out := imprint(t, "boot", "list", "--disk", disk, "--json")
	if err := jsonUnmarshal(out, &menu); err != nil {
		t.Fatal(err)
	}
	local, _ := menu.Find("local")
	imprint(t, "boot", "add", "--disk", disk, "--id", "alt", "--title", "Alternative",
		"--kernel", local.Linux, "--initrd", local.Initrd[0], "--options", "root=PARTUUID="+guid+" console=ttyS0 ro panic=1 imprint.test=alt")
	imprint(t, "boot", "default", "alt", "--disk", disk)
	t.Run("alt", func(t *testing.T) {
		c := cmdlineOf(bootsLocal(t, qemu.UEFI, disk, root, im.fx.FileSHA256))
		if !strings.Contains(c, "imprint.test=alt") {
			t.Fatalf("booted %q, not the new default", c)
		}
	})
	imprint(t, "boot", "default", "diskless", "--disk", disk)
	t.Run("diskless", func(t *testing.T) {
		vm := startVM(t, qemu.Config{Firmware: qemu.UEFI, Disks: []qemu.Disk{{Path: disk}}, Snapshot: true})
		// The agent comes with the network work; the image's own initrd
		// finds no root= and says so. The kernel's command line is what
		// this test is about.
		if err := vm.Expect(t.Context(), qemu.Marker{Text: "imprint.source=" + source, Timeout: firmwareBoot}); err != nil {
			t.Fatal(err)
		}
		line := grepLines(vm.Console(), "imprint.source=")
		if !strings.Contains(line, "Command line:") && !strings.Contains(line, "command line:") {
			t.Errorf("imprint.source seen outside the kernel command line: %q", line)
		}
		if strings.Contains(line, "root=") {
			t.Errorf("the diskless entry passes a root= to the kernel: %q", line)
		}
	})
	imprint(t, "boot", "default", "local", "--disk", disk)
	t.Run("local-again", func(t *testing.T) {
		c := cmdlineOf(bootsLocal(t, qemu.UEFI, disk, root, im.fx.FileSHA256))
		if strings.Contains(c, "imprint.test=alt") {
			t.Fatalf("booted %q, want the local entry", c)
		}
	})
}

// Test 5: a disk that holds another small OS (its own loader on the ESP and
// its own root) gets imprint beside it; both systems boot from imprint's
// menu and no byte of the other system changes.
func TestDualBootKeepsTheOtherSystem(t *testing.T) {
	requireQEMU(t)
	for _, tool := range []string{"sgdisk", "mkfs.vfat", "mcopy", "mmd", "grub-mkimage", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: make deps installs it", tool)
		}
	}
	im := buildImage(t, "console=ttyS0 ro panic=1")
	dir := t.TempDir()
	disk := filepath.Join(dir, "laptop.img")
	otherGUID := "0a0b0c0d-1111-4222-8333-444455556666"
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	f, _ := os.Create(disk)
	f.Truncate(1 << 30)
	f.Close()
	run("sgdisk", "-n", "1:1M:+100M", "-t", "1:ef00", "-c", "1:EFI", "-n", "2:0:+64M", "-t", "2:8304", "-c", "2:otheros", "-u", "2:"+otherGUID, disk)
	// The other system's root and ESP.
	otherRoot := filepath.Join(dir, "other.ext4")
	run("mkfs.ext4", "-q", "-F", "-d", im.fx.RootfsDir, otherRoot, "64M")
	esp := filepath.Join(dir, "esp.img")
	f, _ = os.Create(esp)
	f.Truncate(100 << 20)
	f.Close()
	run("mkfs.vfat", "-F", "32", "-n", "OTHER", esp)
	early := filepath.Join(dir, "early.cfg")
	os.WriteFile(early, []byte("serial --unit=0 --speed=115200\nterminal_output serial console\n"+
		"search --no-floppy --file --set=root /otheros/vmlinuz\necho \"IMPRINT-TEST otheros: grub\"\n"+
		"linux /otheros/vmlinuz root=PARTUUID="+otherGUID+" console=ttyS0 ro panic=1 otheros.marker\n"+
		"initrd /otheros/initrd.img\nboot\n"), 0o644)
	grubImg := filepath.Join(dir, "grubx64.efi")
	run("grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/otheros", "-c", early, "-o", grubImg,
		"part_gpt", "fat", "linux", "search", "search_fs_file", "echo", "serial", "terminal", "boot", "normal")
	run("mmd", "-i", esp, "::/EFI", "::/EFI/otheros", "::/otheros")
	run("mcopy", "-i", esp, grubImg, "::/EFI/otheros/grubx64.efi")
	run("mcopy", "-i", esp, im.fx.Kernel, "::/otheros/vmlinuz")
	run("mcopy", "-i", esp, im.fx.Initrd, "::/otheros/initrd.img")
	run("dd", "if="+esp, "of="+disk, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
	run("dd", "if="+otherRoot, "of="+disk, "bs=1M", "seek=101", "conv=notrunc", "status=none")

	otherP := partitionNamed(t, disk, "otheros")
	otherBefore := hashRange(t, disk, otherP.Start, otherP.Len)
	espFiles := map[string]string{}
	for _, p := range []string{"/EFI/otheros/grubx64.efi", "/otheros/vmlinuz", "/otheros/initrd.img"} {
		espFiles[p] = espFileHash(t, disk, p)
	}

	im.deploy(t, disk, "--keep-existing")
	root := partitionNamed(t, disk, "root")
	out := imprint(t, "boot", "list", "--disk", disk)
	if !strings.Contains(string(out), "chainload-otheros") {
		t.Fatalf("no chainload entry for the other system:\n%s", out)
	}
	t.Run("imprint-local", func(t *testing.T) {
		bootsLocal(t, qemu.UEFI, disk, root, im.fx.FileSHA256)
	})
	imprint(t, "boot", "default", "chainload-otheros", "--disk", disk)
	t.Run("other-system", func(t *testing.T) {
		other := diskPartition{Index: otherP.Index, GUID: otherGUID}
		c := cmdlineOf(bootsLocal(t, qemu.UEFI, disk, other, im.fx.FileSHA256))
		if !strings.Contains(c, "otheros.marker") {
			t.Fatalf("the other system's loader did not run: %q", c)
		}
	})
	if got := hashRange(t, disk, otherP.Start, otherP.Len); got != otherBefore {
		t.Error("the other system's root partition changed")
	}
	for p, h := range espFiles {
		if got := espFileHash(t, disk, p); got != h {
			t.Errorf("the other system's ESP file %s changed", p)
		}
	}
}

func espFileHash(t *testing.T, disk, name string) string {
	t.Helper()
	d, err := imdisk.OpenDisk(disk, imdisk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, parts, err := imdisk.ReadGPT(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if p.Type == layout.TypeESP {
			fat, err := imdisk.OpenFAT(d, p.Start, p.Len)
			if err != nil {
				t.Fatal(err)
			}
			b, err := fat.ReadFile(name)
			if err != nil {
				t.Fatalf("%s on the ESP: %v", name, err)
			}
			return fmt.Sprintf("%x", sha256Sum(b))
		}
	}
	t.Fatal("no ESP")
	return ""
}

// crashFS stops writing after a number of writes and removals, as a
// power cut between two of them would.
type crashFS struct {
	bootloader.FS
	left int
}

var errCrash = errors.New("simulated crash")

func (c *crashFS) step() error {
	if c.left == 0 {
		return errCrash
	}
	c.left--
	return nil
}

func (c *crashFS) WriteFile(n string, b []byte) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.WriteFile(n, b)
}

func (c *crashFS) Remove(n string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.Remove(n)
}

// reinstallCrashed re-runs the boot loader step for a new version on disk
// and stops it after n file operations.
func reinstallCrashed(t *testing.T, disk string, n int, o bootloader.InstallOptions) error {
	t.Helper()
	d, err := imdisk.OpenDisk(disk, imdisk.OpenOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, parts, _ := imdisk.ReadGPT(d)
	for _, p := range parts {
		if p.Type != layout.TypeESP {
			continue
		}
		fat, err := imdisk.OpenFAT(d, p.Start, p.Len)
		if err != nil {
			t.Fatal(err)
		}
		_, err = bootloader.Install(t.Context(), &crashFS{FS: fat, left: n}, o)
		d.Sync()
		return err
	}
	t.Fatal("no ESP")
	return nil
}

// Test 6: the boot loader step is stopped at several points while it
// replaces the menu (a new kernel directory and entries); every time the
// disk still boots an entry, the old one or the new one. A real SIGKILL of
// `imprint boot add` is also tried at several delays.
func TestMenuSurvivesInterruptedUpdates(t *testing.T) {
	requireQEMU(t)
	im := buildImage(t, "console=ttyS0 ro panic=1")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	im.deploy(t, base, "--size", "1G", "--firmware", "uefi")
	root := partitionNamed(t, base, "root")
	kernel, _ := os.ReadFile(im.fx.Kernel)
	initrd, _ := os.ReadFile(im.fx.Initrd)
	// The loader the deploy wrote, as the image carries it.
	sdboot := espFile(t, base, ondisk.LoadersDir+"/"+image.LoaderSystemdBoot)
	o := bootloader.InstallOptions{
		Loaders: map[string][]byte{image.LoaderSystemdBoot: sdboot},
		Name:    "fixture", Version: "v2", Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0 ro panic=1 imprint.test=v2",
		RootPARTUUID: root.GUID, NoNetboot: true, Timeout: 0,
	}
	for _, n := range []int{1, 2, 3, 5, 1000} {
		t.Run(fmt.Sprintf("after-%d-writes", n), func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.img")
			if err := imdisk.CopySparseFile(base, disk); err != nil {
				t.Fatal(err)
			}
			err := reinstallCrashed(t, disk, n, o)
			if n < 1000 && !errors.Is(err, errCrash) {
				t.Fatalf("install did not stop: %v", err)
			}
			if n == 1000 && err != nil {
				t.Fatal(err)
			}
			c := cmdlineOf(bootsLocal(t, qemu.UEFI, disk, root, im.fx.FileSHA256))
			t.Logf("booted %q", c)
			if n == 1000 && !strings.Contains(c, "imprint.test=v2") {
				t.Fatalf("a finished update booted the old entry")
			}
		})
	}

	bin := filepath.Join(dir, "imprint")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/imprint").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, delay := range []time.Duration{50 * time.Millisecond, 300 * time.Millisecond, 700 * time.Millisecond} {
		t.Run(fmt.Sprintf("sigkill-after-%v", delay), func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.img")
			if err := imdisk.CopySparseFile(base, disk); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "boot", "add", "--disk", disk, "--id", "alt", "--title", "Alt", "--default",
				"--kernel", im.fx.Kernel, "--initrd", im.fx.Initrd,
				"--options", "root=PARTUUID="+strings.ToLower(root.GUID)+" console=ttyS0 ro panic=1 imprint.test=alt")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			cmd.Process.Signal(syscall.SIGKILL)
			werr := cmd.Wait()
			c := cmdlineOf(bootsLocal(t, qemu.UEFI, disk, root, im.fx.FileSHA256))
			t.Logf("killed (%v); booted %q", werr, c)
		})
	}
}

// NVRAM: inside the guest, `imprint boot nvram add --next` writes a
// Boot#### entry and BootNext through efivarfs; the host finds them in the
// OVMF variable store, and the next boot loads that entry.
func TestNVRAMEntryAndBootNext(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "imprint")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/imprint")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fx, err := fixture.Options{Imprint: bin}.Build(t.Context(), filepath.Join(dir, "fx"))
	if err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	imprint(t, "build", "--store", store, "--name", "fixture", "--rootfs", fx.RootfsDir, "--cmdline", "console=ttyS0 ro panic=1 imprint.test.nvram")
	disk := filepath.Join(dir, "disk.img")
	imprint(t, "deploy", "--from", store, "--image", "fixture", "--disk", disk, "--size", "1G", "--yes", "--boot-timeout", "0", "--firmware", "uefi")
	root := partitionNamed(t, disk, "root")
	vars := filepath.Join(dir, "vars.fd")
	if err := copyFileT(qemu.OVMFVars, vars); err != nil {
		t.Fatal(err)
	}
	boot := func(t *testing.T, extra ...qemu.Marker) string {
		// Per-disk snapshot: -snapshot would also discard the NVRAM writes.
		vm := startVM(t, qemu.Config{Firmware: qemu.UEFI, UEFIVars: vars, Disks: []qemu.Disk{{Path: disk, Snapshot: true}}})
		markers := append(extra,
			qemu.Marker{Text: fixture.InitrdRootMarker + strings.ToLower(root.GUID), Timeout: firmwareBoot},
			qemu.Marker{Text: "IMPRINT-TEST root: nvram ok", Timeout: nextMarkerTimeout},
			qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout})
		if err := vm.Expect(t.Context(), markers...); err != nil {
			t.Fatal(err)
		}
		if err := vm.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		return vm.Console()
	}
	boot(t)
	store1, err := qemu.ReadUEFIVars(vars)
	if err != nil {
		t.Fatal(err)
	}
	var num uint16
	found := false
	for k, v := range store1 {
		if !strings.HasPrefix(k, "Boot") || len(v.Name) != 8 || v.GUID != bootloader.GlobalVariable {
			continue
		}
		n, err := strconv.ParseUint(v.Name[4:], 16, 16)
		if err != nil {
			continue
		}
		lo, err := bootloader.DecodeLoadOption(uint16(n), v.Data)
		if err == nil && lo.Description == "imprint-test" {
			num, found = uint16(n), true
			if lo.Path != `\EFI\systemd\systemd-bootx64.efi` {
				t.Errorf("the entry loads %q", lo.Path)
			}
		}
	}
	if !found {
		t.Fatalf("no Boot#### \"imprint-test\" in the OVMF variable store (%d variables)", len(store1))
	}
	next, ok := store1["BootNext-"+bootloader.GlobalVariable]
	if !ok || len(next.Data) != 2 || uint16(next.Data[0])|uint16(next.Data[1])<<8 != num {
		t.Fatalf("BootNext is %v, want %04X", next.Data, num)
	}
	// The firmware takes BootNext on the next boot and says which entry
	// it loads.
	c := boot(t, qemu.Marker{Text: fmt.Sprintf("Boot%04X \"imprint-test\"", num), Timeout: firmwareBoot})
	t.Logf("%s", grepLines(c, "BdsDxe"))
}

func copyFileT(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// espFile reads one file from a deployed disk's ESP.
func espFile(t *testing.T, disk, name string) []byte {
	t.Helper()
	d, err := imdisk.OpenDisk(disk, imdisk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, parts, _ := imdisk.ReadGPT(d)
	for _, p := range parts {
		if p.Type != layout.TypeESP {
			continue
		}
		fat, err := imdisk.OpenFAT(d, p.Start, p.Len)
		if err != nil {
			t.Fatal(err)
		}
		b, err := fat.ReadFile(name)
		if err != nil {
			t.Fatalf("%s on the ESP of %s: %v", name, disk, err)
		}
		return b
	}
	t.Fatal("no ESP")
	return nil
}
