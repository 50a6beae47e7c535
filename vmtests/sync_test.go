//go:build vmtest

package vmtests

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/cli"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// syncVersions builds the fixture as v1 (fresh), v2 (the tree plus a file,
// `build --base fixture:1`) and a broken v3 (on v2, its command line with
// rdinit=/nonexistent: the kernel finds no init, cannot mount the root
// itself, panics, and panic=1 reboots).
func syncVersions(t *testing.T) (fx *fixture.Fixture, store string) {
	t.Helper()
	testenv.NeedRoot(t) // build --base loop-mounts the base filesystem
	testenv.NeedTool(t, "rsync")
	fx = buildFixture(t)
	store = filepath.Join(t.TempDir(), "store")
	const cmdline = "console=ttyS0 ro panic=1"
	imprint(t, "build", "--store", store, "--name", "fixture", "--version", "1", "--rootfs", fx.RootfsDir, "--cmdline", cmdline)
	tree := filepath.Join(t.TempDir(), "tree")
	if b, err := exec.Command("cp", "-a", fx.RootfsDir, tree).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, b)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "imprint-test-release"), []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	imprint(t, "build", "--store", store, "--name", "fixture", "--version", "2", "--rootfs", tree, "--base", "fixture:1", "--cmdline", cmdline)
	imprint(t, "build", "--store", store, "--name", "fixture", "--version", "3", "--rootfs", tree, "--base", "fixture:2", "--cmdline", cmdline+" rdinit=/nonexistent")
	return fx, store
}

// bootsSlot boots disk (writes kept: the loaders count on it) and checks
// that the root of the given slot partition came up; it returns the console.
func bootsSlot(t *testing.T, fw qemu.Firmware, disk string, root diskPartition, entry string) string {
	t.Helper()
	begin := time.Now()
	vm := startVM(t, qemu.Config{Firmware: fw, Disks: []qemu.Disk{{Path: disk}}})
	if err := vm.Expect(t.Context(),
		qemu.Marker{Text: fixture.InitrdRootMarker + strings.ToLower(root.GUID), Timeout: firmwareBoot},
		qemu.Marker{Text: fixture.RootCmdlineMarker, Timeout: nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout}); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(t.Context()); err != nil {
		t.Fatalf("the guest should power off cleanly: %v", err)
	}
	console := vm.Console()
	if c := cmdlineOf(console); !strings.Contains(c, "imprint.entry="+entry) {
		t.Fatalf("booted %q, want entry %s", c, entry)
	}
	t.Logf("%s: %s (%s) booted in %v", fw, entry, root.Name, time.Since(begin).Round(time.Second))
	return console
}

func slotStates(t *testing.T, disk string) []bootloader.SlotState {
	t.Helper()
	var st []bootloader.SlotState
	if err := json.Unmarshal(imprint(t, "slots", "--disk", disk, "--json"), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// The update chain, one VM per firmware, boots chained on one disk file:
//
// UEFI (OVMF, systemd-boot): deploy v1 with two slots -> boot v1 from slot
// a -> `imprint sync --disk` to v2 from a store on the host (the disk not
// running) -> boot: v2 runs from slot b -> the host blesses it (the fixture
// has no systemd and no imprint: the test watches the boot reach its root
// and blesses from outside with `bless --disk --entry`, what
// imprint-bless.service does on a real image) -> verify identical -> sync
// the broken v3 into slot a (v1 is gone) -> boot: v3 panics on both its
// tries, and the machine is back on v2 by itself -> `imprint slots` says
// slot a is bad -> `imprint rollback` refuses to go to v3, which failed its
// boots (blessing it would boot a panicking kernel for good), and leaves
// the menu as it was.
//
// SeaBIOS (GRUB i386-pc): deploy v1 -> sync v2 -> boot: v2 from slot b.
func TestSyncChainBootsTheNewSlotAndFallsBack(t *testing.T) {
	requireQEMU(t)
	_, store := syncVersions(t)
	deploy := func(t *testing.T) string {
		disk := filepath.Join(t.TempDir(), "disk.img")
		imprint(t, "deploy", "--from", store, "--image", "fixture:1", "--disk", disk, "--yes", "--boot-timeout", "0", "--size", "1G", "--slots", "2")
		return disk
	}
	sync := func(t *testing.T, disk, version string) {
		imprint(t, "sync", "--from", store, "--image", "fixture:"+version, "--disk", disk, "--tries", "2")
	}

	t.Run("UEFI", func(t *testing.T) {
		disk := deploy(t)
		rootA, rootB := partitionNamed(t, disk, "root-a"), partitionNamed(t, disk, "root-b")
		bootsSlot(t, qemu.UEFI, disk, rootA, "slot-a")

		sync(t, disk, "2")
		bootsSlot(t, qemu.UEFI, disk, rootB, "slot-b")
		if names := espDir(t, disk, bootloader.EntriesDir); !strings.Contains(names, "imprint-slot-b+1-1.conf") {
			t.Errorf("systemd-boot did not count the try: %s", names)
		}
		imprint(t, "bless", "--disk", disk, "--entry", "slot-b")
		if out := imprint(t, "verify", "--disk", disk); !bytes.Contains(out, []byte("fixture:2 in slot b (active)")) {
			t.Errorf("verify:\n%s", out)
		}

		v2 := hashRange(t, disk, rootB.Start, rootB.Len)
		sync(t, disk, "3")
		if hashRange(t, disk, rootB.Start, rootB.Len) != v2 {
			t.Fatal("the sync to v3 wrote slot b, the running one")
		}
		begin := time.Now()
		vm := startVM(t, qemu.Config{Firmware: qemu.UEFI, Disks: []qemu.Disk{{Path: disk}}, Reboot: true})
		tryBad := []qemu.Marker{
			{Text: "imprint.entry=slot-a", Timeout: firmwareBoot},
			{Text: "Kernel panic", Timeout: nextMarkerTimeout},
		}
		markers := append(append(tryBad, tryBad...),
			qemu.Marker{Text: fixture.InitrdRootMarker + strings.ToLower(rootB.GUID), Timeout: firmwareBoot},
			qemu.Marker{Text: fixture.RootCmdlineMarker, Timeout: nextMarkerTimeout},
			qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout})
		if err := vm.Expect(t.Context(), markers...); err != nil {
			t.Fatal(err)
		}
		if err := vm.Wait(t.Context()); err != nil {
			t.Fatalf("the guest should power off cleanly: %v", err)
		}
		console := vm.Console()
		if c := cmdlineOf(console); !strings.Contains(c, "imprint.entry=slot-b") {
			t.Fatalf("the fallback boot ran %q, want slot b's entry", c)
		}
		if n := strings.Count(console, "Kernel panic"); n != 2 {
			t.Errorf("v3 was tried %d times, want 2", n)
		}
		t.Logf("v3's two failed tries and the fallback to v2 in %v", time.Since(begin).Round(time.Second))

		st := slotStates(t, disk)
		if len(st) != 2 || st[0].Slot != "a" || !st[0].Bad || st[0].Version != "3" || !st[1].Next || st[1].Version != "2" {
			t.Fatalf("imprint slots after the fallback: %+v", st)
		}
		var out, errb bytes.Buffer
		code := cli.Run(t.Context(), []string{"rollback", "--disk", disk}, cli.Stdio{In: strings.NewReader(""), Out: &out, Err: &errb})
		if code == 0 || !strings.Contains(errb.String(), "slot a (3) ran out of tries") {
			t.Fatalf("rollback to the failed v3: exit %d\n%s%s", code, out.String(), errb.String())
		}
		if after := slotStates(t, disk); !after[1].Next || !after[0].Bad {
			t.Errorf("a refused rollback changed the slots: %+v", after)
		}
	})

	t.Run("BIOS", func(t *testing.T) {
		disk := deploy(t)
		sync(t, disk, "2")
		bootsSlot(t, qemu.BIOS, disk, partitionNamed(t, disk, "root-b"), "slot-b")
		if env, err := bootloader.ParseGrubEnv(espFile(t, disk, bootloader.GrubEnv)); err != nil || env["imprint_tries_slot_b"] != "1" {
			t.Errorf("GRUB did not count the try in grubenv: %v %v", env, err)
		}
	})
}
