//go:build vmtest

package vmtests

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// Per-marker timeouts: a direct kernel boot reaches userspace in ~5 s under
// TCG, but runs swing 2x and CI machines are busy; IMPRINT_VM_TIMEOUT_SCALE
// stretches them further.
const (
	bootMarkerTimeout = 90 * time.Second
	nextMarkerTimeout = 60 * time.Second
)

// TestFixtureBootsDirect deploys the fixture's root with imprint and boots
// it with QEMU's direct kernel boot: the initrd must find the root by the
// PARTUUID imprint wrote, the root must be what imprint built (the random
// file's hash), and the root partition must stay bit-for-bit unchanged.
func TestFixtureBootsDirect(t *testing.T) {
	requireQEMU(t)
	ctx := t.Context()
	fx := buildFixture(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	disk := filepath.Join(dir, "disk.img")
	imprint(t, "build", "--store", store, "--name", "fixture", "--rootfs", fx.RootfsDir)
	imprint(t, "deploy", "--from", store, "--image", "fixture", "--disk", disk, "--size", "1G", "--yes")
	root := partitionNamed(t, disk, "root")
	guid := strings.ToLower(root.GUID)
	before := hashRange(t, disk, root.Start, root.Len)

	cmdline := "root=PARTUUID=" + guid + " console=ttyS0 panic=1"
	node := "/dev/vda" + strconv.Itoa(root.Index)
	// Both firmwares: SeaBIOS is QEMU's default, and OVMF (which can also
	// load a kernel given with -kernel) checks the pflash setup the UEFI
	// tests build on.
	for _, fw := range []qemu.Firmware{qemu.BIOS, qemu.UEFI} {
		t.Run(fw.String(), func(t *testing.T) {
			begin := time.Now()
			vm := startVM(t, qemu.Config{
				Firmware: fw,
				Kernel:   fx.Kernel, Initrd: fx.Initrd, Append: cmdline,
				Disks: []qemu.Disk{{Path: disk}},
			})
			err := vm.Expect(ctx,
				qemu.Marker{Text: fixture.InitrdRootMarker + guid + " is " + node, Timeout: bootMarkerTimeout},
				qemu.Marker{Text: fixture.RootCmdlineMarker + cmdline, Timeout: nextMarkerTimeout},
				qemu.Marker{Text: fixture.RootSHA256Marker + fx.FileSHA256, Timeout: nextMarkerTimeout},
				qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout},
			)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("booted to %q in %v:\n%s", fixture.RootOKMarker, time.Since(begin).Round(time.Millisecond), grepLines(vm.Console(), "IMPRINT-TEST"))
			if !strings.Contains(vm.Console(), "IMPRINT-TEST root: mount="+node+" / ext4 ro,") {
				t.Errorf("the root is not mounted read-only from %s:\n%s", node, grepLines(vm.Console(), "IMPRINT-TEST"))
			}
			if err := vm.Wait(ctx); err != nil {
				t.Fatalf("the guest should power off cleanly: %v", err)
			}
			if strings.Contains(vm.Console(), fixture.InitrdFailMarker) {
				t.Errorf("the initrd reported a failure:\n%s", grepLines(vm.Console(), "IMPRINT-TEST"))
			}
			if after := hashRange(t, disk, root.Start, root.Len); after != before {
				t.Errorf("the root partition changed during the boot: sha256 %s before, %s after", before, after)
			}
		})
	}
}

// TestHarnessReportsMissingMarker checks that a boot that never prints a
// marker fails with the console in the error, both when the guest hangs
// (timeout) and when QEMU ends first (the kernel panics).
func TestHarnessReportsMissingMarker(t *testing.T) {
	requireQEMU(t)
	ctx := t.Context()
	fx := buildFixture(t)

	t.Run("timeout", func(t *testing.T) {
		// No disk has this partition: the initrd keeps looking for the
		// root for ten minutes, long after the marker's timeout.
		vm := startVM(t, qemu.Config{
			Kernel: fx.Kernel, Initrd: fx.Initrd,
			Append: "root=PARTUUID=00000000-0000-4000-8000-000000000000 imprint.rootwait=600 console=ttyS0 panic=1",
		})
		if err := vm.Expect(ctx, qemu.Marker{Text: "IMPRINT-TEST initrd: loaded", Timeout: bootMarkerTimeout}); err != nil {
			t.Fatal(err)
		}
		err := vm.Expect(ctx, qemu.Marker{Text: fixture.RootOKMarker, Timeout: 5 * time.Second})
		if !errors.Is(err, qemu.ErrTimeout) {
			t.Fatalf("got %v, want ErrTimeout", err)
		}
		if !strings.Contains(err.Error(), "IMPRINT-TEST initrd: loaded") || !strings.Contains(err.Error(), fixture.RootOKMarker) {
			t.Errorf("the error should name the marker and quote the console:\n%v", err)
		}
	})

	t.Run("exited", func(t *testing.T) {
		// No initrd: the kernel cannot mount a root, panics, and with
		// panic=1 and -no-reboot QEMU exits.
		vm := startVM(t, qemu.Config{Kernel: fx.Kernel, Append: "console=ttyS0 panic=1"})
		begin := time.Now()
		err := vm.Expect(ctx, qemu.Marker{Text: fixture.RootOKMarker, Timeout: 5 * time.Minute})
		if !errors.Is(err, qemu.ErrExited) {
			t.Fatalf("got %v, want ErrExited", err)
		}
		if !strings.Contains(err.Error(), "Kernel panic") {
			t.Errorf("the error should quote the panic:\n%v", err)
		}
		t.Logf("failed after %v, not after the 5 min timeout", time.Since(begin).Round(time.Millisecond))
	})
}
