//go:build vmtest

package bootloader

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/layout"
)

// A boot under TCG takes ~11-13 s here (FIELD-NOTES); 120 s leaves room
// for slow, noisy runs.
const biosVMTimeout = 120 * time.Second

// biosVMDisk is a 64 MiB disk with GRUB for BIOS installed and, if cfg is
// not empty, cfg as the ESP's /EFI/imprint/grub.cfg.
func biosVMDisk(t *testing.T, cfg string) string {
	t.Helper()
	biosTestGrub(t)
	d, path, tab := biosTestDisk(t, 0)
	esp, _ := tab.ByRole(layout.RoleESP)
	fat, err := disk.FormatFAT(d, esp, "ESP")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != "" {
		if err := fat.WriteFile(biosTestConfig, []byte(cfg)); err != nil {
			t.Fatal(err)
		}
	}
	bios, _ := tab.ByRole(layout.RoleBIOSBoot)
	start := time.Now()
	bootImg, core, err := BuildGrubBIOS(context.Background(), GrubBIOSBuild{ConfigPath: biosTestConfig, TmpDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := InstallBIOS(context.Background(), d, bios, BIOSOptions{BootImg: bootImg, CoreImg: core}); err != nil {
		t.Fatal(err)
	}
	t.Logf("InstallBIOS: %v", time.Since(start).Round(time.Millisecond))
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	return path
}

// biosBootQEMU boots disk under SeaBIOS (QEMU's default firmware without
// pflash) and waits for marker on the serial port, then up to grace for
// QEMU to power off by itself. QEMU is killed on every path out. It returns
// the serial output, the time to the marker and whether QEMU powered off.
func biosBootQEMU(t *testing.T, disk, marker string, grace time.Duration) (string, time.Duration, bool) {
	t.Helper()
	qemu := biosTestTool(t, "qemu-system-x86_64")
	serial := filepath.Join(t.TempDir(), "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), biosVMTimeout)
	defer cancel()
	// -display none + -monitor none rather than -nographic: the same
	// headless run, without a monitor on stdio.
	cmd := exec.CommandContext(ctx, qemu,
		"-machine", "q35,accel=tcg", "-m", "256",
		"-display", "none", "-monitor", "none", "-serial", "file:"+serial,
		"-drive", "file="+disk+",format=raw,if=virtio",
		"-no-reboot")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	// GRUB wraps long lines at the terminal width, so compare with all
	// whitespace runs as one space.
	seen := func() (string, bool) {
		out, _ := os.ReadFile(serial)
		return string(out), strings.Contains(strings.Join(strings.Fields(string(out)), " "), marker)
	}
	for {
		out, ok := seen()
		if ok {
			took := time.Since(start)
			select {
			case err := <-exited:
				exited <- err
				return out, took, true
			case <-time.After(grace):
				return out, took, false
			}
		}
		select {
		case err := <-exited:
			exited <- err // for the deferred kill
			// The marker may have come between the read and the exit.
			if out, ok := seen(); ok {
				return out, time.Since(start), true
			}
			t.Fatalf("QEMU exited (%v) before %q after %v\nserial:\n%s\nstderr:\n%s", err, marker, time.Since(start).Round(time.Second), out, stderr.String())
		case <-ctx.Done():
			t.Fatalf("no %q on the serial port within %v\nserial:\n%s\nstderr:\n%s", marker, biosVMTimeout, out, stderr.String())
		case <-tick.C:
		}
	}
}

func TestBIOSBootsGrubInQEMU(t *testing.T) {
	disk := biosVMDisk(t, "serial --unit=0 --speed=115200\nterminal_output serial console\necho IMPRINT-GRUB-BIOS-OK\nhalt\n")
	_, took, off := biosBootQEMU(t, disk, "IMPRINT-GRUB-BIOS-OK", 5*time.Second)
	t.Logf("SeaBIOS -> boot.img -> core.img -> ESP grub.cfg: marker after %v; powered off by GRUB's halt: %v", took.Round(100*time.Millisecond), off)
}

func TestBIOSBootWithoutConfigSaysWhy(t *testing.T) {
	disk := biosVMDisk(t, "")
	out, took, _ := biosBootQEMU(t, disk, "dropping to the GRUB shell", 0)
	if !strings.Contains(strings.Join(strings.Fields(out), " "), "imprint: GRUB (BIOS) could not load /EFI/imprint/grub.cfg") {
		t.Errorf("serial output lacks imprint's message:\n%s", out)
	}
	t.Logf("failure message after %v", took.Round(100*time.Millisecond))
}

// TestBIOSMatchesGrubBiosSetup installs the same core.img with GRUB's own
// grub-bios-setup (grub-install's back end) on a copy of the disk and
// compares: the MBR and the BIOS boot partition must be byte-identical.
// grub-bios-setup wants its -d directory on a block device it can map,
// so the images sit on a small ext2 loop mount; that needs root.
func TestBIOSMatchesGrubBiosSetup(t *testing.T) {
	biosTestGrub(t)
	setup := filepath.Join(biosDefaultGrubDir, "grub-bios-setup")
	testenv.NeedFile(t, setup, "grub-pc-bin")
	testenv.NeedLoop(t) // grub-bios-setup needs its directory on a loop mount
	losetup := biosTestTool(t, "losetup")
	mkfs := biosTestTool(t, "mkfs.ext2")
	ctx := context.Background()
	tmp := t.TempDir()

	d, path, tab := biosTestDisk(t, 0)
	bios, _ := tab.ByRole(layout.RoleBIOSBoot)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(tmp, "ref.img")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ref, raw, 0o644); err != nil {
		t.Fatal(err)
	}

	bootImg, core, err := BuildGrubBIOS(ctx, GrubBIOSBuild{ConfigPath: biosTestConfig, TmpDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	o := BIOSOptions{BootImg: bootImg, CoreImg: core}
	dir := filepath.Join(tmp, "grub")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "boot.img"), bootImg, 0o644)
	os.WriteFile(filepath.Join(dir, "core.img"), core, 0o644)
	fsImg := filepath.Join(tmp, "grubdir.ext2")
	if out, err := exec.Command(mkfs, "-q", "-d", dir, fsImg, "4M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext2: %v\n%s", err, out)
	}
	out, err := exec.Command(losetup, "-f", "--show", fsImg).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", loop).Run() })
	mnt := filepath.Join(tmp, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "ro", loop, mnt).CombinedOutput(); err != nil {
		testenv.Skipf(t, "cannot mount ext2 here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	devmap := filepath.Join(tmp, "device.map")
	os.WriteFile(devmap, []byte("(hd0) "+ref+"\n(hd1) "+loop+"\n"), 0o644)
	if out, err := exec.Command(setup, "-d", mnt, "-m", devmap, "--skip-fs-probe", "--no-rs-codes", ref).CombinedOutput(); err != nil {
		t.Fatalf("grub-bios-setup: %v\n%s", err, out)
	}

	if err := InstallBIOS(ctx, d, bios, o); err != nil {
		t.Fatal(err)
	}
	rf, err := os.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	for _, r := range []struct {
		what     string
		off, len int64
	}{{"MBR", 0, 512}, {"BIOS boot partition", bios.Start, bios.Len}} {
		want := make([]byte, r.len)
		if _, err := rf.ReadAt(want, r.off); err != nil {
			t.Fatal(err)
		}
		got := biosReadAt(t, d, r.off, r.len)
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && got[i] == want[i] {
				i++
			}
			t.Errorf("%s differs from grub-bios-setup's from byte %d: imprint % x, GRUB % x", r.what, i, got[i:min(i+16, len(got))], want[i:min(i+16, len(want))])
		}
	}
	if !t.Failed() {
		t.Logf("MBR and %d-byte BIOS boot partition identical to grub-bios-setup's", bios.Len)
	}
}
