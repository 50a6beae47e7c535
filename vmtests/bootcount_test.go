//go:build vmtest

package vmtests

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// A new slot entry that cannot boot runs out of tries and the machine is
// back on the good one by itself, with nobody at the console: under OVMF
// through systemd-boot (which renames the entry file on each try) and under
// SeaBIOS through GRUB (which counts in grubenv). The bad entry is the same
// kernel with rdinit=/nonexistent: the kernel finds no init, cannot mount
// the root itself (its disk drivers are modules), panics, and panic=1
// reboots the VM (QEMU runs without -no-reboot here).
func TestFailedSlotFallsBackByItself(t *testing.T) {
	requireQEMU(t)
	im := buildImage(t, "console=ttyS0 ro panic=1")
	for _, fw := range []qemu.Firmware{qemu.UEFI, qemu.BIOS} {
		t.Run(fw.String(), func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.img")
			// One slot: this test sets the slot entries itself.
			im.deploy(t, disk, "--size", "1G", "--firmware", "both", "--slots", "1")
			root := partitionNamed(t, disk, "root")

			esp, err := bootloader.OpenDiskESP(disk, true)
			if err != nil {
				t.Fatal(err)
			}
			_, err = esp.Edit(func(m *bootloader.Menu) error {
				local, ok := m.Find("local")
				if !ok {
					t.Fatal("no local entry")
				}
				good := *local
				if err := m.SetSlotEntry("a", good, 0); err != nil {
					return err
				}
				bad := good
				bad.Version = good.Version + ".1" // newer: it sorts first while it has tries
				bad.Options += " rdinit=/nonexistent"
				return m.SetSlotEntry("b", bad, 2)
			})
			if cerr := esp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			if fw == qemu.UEFI && !strings.Contains(string(espFile(t, disk, bootloader.LoaderConf)), "default imprint-slot-*") {
				t.Fatal("loader.conf does not default to the slots")
			}

			begin := time.Now()
			// The disk itself, not a snapshot: the loader's counting is
			// what this test reads back.
			vm := startVM(t, qemu.Config{Firmware: fw, Disks: []qemu.Disk{{Path: disk}}, Reboot: true})
			tryBad := []qemu.Marker{
				{Text: "imprint.entry=slot-b", Timeout: firmwareBoot},
				{Text: "Kernel panic", Timeout: nextMarkerTimeout},
			}
			markers := append(append(tryBad, tryBad...),
				qemu.Marker{Text: fixture.InitrdRootMarker + strings.ToLower(root.GUID), Timeout: firmwareBoot},
				qemu.Marker{Text: fixture.RootCmdlineMarker, Timeout: nextMarkerTimeout},
				qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout})
			if err := vm.Expect(t.Context(), markers...); err != nil {
				t.Fatal(err)
			}
			if err := vm.Wait(t.Context()); err != nil {
				t.Fatalf("the guest should power off cleanly: %v", err)
			}
			console := vm.Console()
			t.Logf("%s: two failed tries and the fallback boot in %v", fw, time.Since(begin).Round(time.Second))
			if c := cmdlineOf(console); !strings.Contains(c, "imprint.entry=slot-a") {
				t.Fatalf("the fallback boot ran %q, want slot a's entry", c)
			}
			if n := strings.Count(console, "Kernel panic"); n != 2 {
				t.Errorf("the bad entry was tried %d times, want 2", n)
			}

			// From the host: the bad entry has no tries left, and
			// imprint says so.
			switch fw {
			case qemu.UEFI:
				names := espDir(t, disk, bootloader.EntriesDir)
				if !strings.Contains(names, "imprint-slot-b+0-2.conf") || !strings.Contains(names, "imprint-slot-a.conf") {
					t.Errorf("entry files after the boots: %s", names)
				}
			case qemu.BIOS:
				env, err := bootloader.ParseGrubEnv(espFile(t, disk, bootloader.GrubEnv))
				if err != nil || env["imprint_tries_slot_b"] != "0" || env["imprint_good_slot_b"] != "0" {
					t.Errorf("grubenv after the boots: %v %v", env, err)
				}
			}
			var st []bootloader.SlotState
			if err := json.Unmarshal(imprint(t, "slots", "--disk", disk, "--json"), &st); err != nil {
				t.Fatal(err)
			}
			if len(st) != 2 || !st[0].Next || !st[1].Bad {
				t.Errorf("imprint slots: %+v", st)
			}
		})
	}
}

// espDir lists a directory of a disk's ESP, names joined by spaces.
func espDir(t *testing.T, disk, dir string) string {
	t.Helper()
	esp, err := bootloader.OpenDiskESP(disk, false)
	if err != nil {
		t.Fatal(err)
	}
	defer esp.Close()
	ents, err := esp.FS.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return strings.Join(n, " ")
}
