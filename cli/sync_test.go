package cli

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/ondisk"
)

// syncImages builds v1 (a 16 MiB random root) and v2 (half of its 64 KiB
// chunks changed) with a stand-in kernel and loaders, in one store.
func syncImages(t *testing.T, dir string) (store string, v1, v2 built) {
	t.Helper()
	store = filepath.Join(dir, "store")
	randomFile(t, filepath.Join(dir, "vmlinuz"), 64<<10)
	for _, f := range []string{"sd-boot.efi", "ipxe.efi"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("MZ stand-in "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := make([]byte, 16<<20)
	rand.Read(data)
	build := func(version string, data []byte) built {
		p := filepath.Join(dir, "root-"+version)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return buildImage(t, "--store", store, "--name", "node", "--version", version, "--partition", "root="+p, "--chunk-size", "64K",
			"--kernel", filepath.Join(dir, "vmlinuz"), "--loader", "systemd-bootx64.efi="+filepath.Join(dir, "sd-boot.efi"),
			"--loader", "ipxe.efi="+filepath.Join(dir, "ipxe.efi"))
	}
	v1 = build("1", data)
	for i := 0; i < len(data); i += 128 << 10 {
		rand.Read(data[i : i+64<<10])
	}
	v2 = build("2", data)
	return store, v1, v2
}

// A sync killed with SIGKILL at any of its steps leaves a disk whose menu
// boots only complete slots (the old one, untouched, until the new entry
// is written), and running it again completes it.
func TestSyncResumesAfterSIGKILLAtEveryStep(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	storeDir, v1, v2 := syncImages(t, dir)
	slow := httptestServer(t, slowChunks(&netboot.HTTP{Store: storeDir, Decider: netboot.Static{}}, 3*time.Millisecond))
	base := filepath.Join(dir, "base.img")
	mustRun(t, "deploy", "--from", storeDir, "--image", "node:1", "--disk", base, "--size", "1G", "--slots", "2", "--yes", "--no-verify")
	od := onDisk(t, base)
	a, _ := od.State.Table.Find("root-a")
	baseA := sha256Range(t, base, a.Start, a.Len)
	baseMenu := espFiles(t, base, bootloader.MenuFile, bootloader.LoaderConf)

	checkpoints := func(n int) func(event) bool {
		seen := 0
		return func(e event) bool {
			if e.Event == "checkpoint" && e.Chunks > 0 {
				seen++
			}
			return seen >= n
		}
	}
	phase := func(p string) func(event) bool { return func(e event) bool { return e.Phase == p } }
	for _, tc := range []struct {
		name string
		stop func(event) bool
		// menuMayChange: the kill came after the step that writes the
		// new entry began.
		menuMayChange bool
	}{
		{"at the plan", func(e event) bool { return e.Event == "sync-plan" }, false},
		{"after the slot's entry was removed", phase("menu-without-slot"), false},
		{"after the record names the slot", phase("slot-record"), false},
		{"after the slot's manifest", phase("slot-files"), false},
		{"at the first write", phase("write"), false},
		{"during the fetch, first checkpoint", checkpoints(1), false},
		{"during the fetch, later checkpoint", checkpoints(4), false},
		{"when the slot is complete", phase("slot-complete"), false},
		{"at the boot files", phase("bootloader"), false},
		{"after the kernel", func(e event) bool { return e.Phase == "boot-file" }, true},
		{"after the entry", phase("entry"), true},
		{"after the switch", phase("active"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "disk.img")
			if err := disk.CopySparseFile(base, p); err != nil {
				t.Fatal(err)
			}
			args := []string{"sync", "--from", slow.URL, "--image", "node:2", "--disk", p, "--json", "--checkpoint-interval", "30ms"}
			if _, killed := deployUntil(t, bin, args, tc.stop); !killed {
				t.Fatal("the sync finished before it could be killed")
			}
			if got := sha256Range(t, p, a.Start, a.Len); got != baseA {
				t.Fatal("the killed sync wrote the active slot")
			}
			od := onDisk(t, p)
			menu := espFiles(t, p, bootloader.MenuFile, bootloader.LoaderConf)
			if !tc.menuMayChange {
				if od.Record.Active != "a" || string(menu[bootloader.MenuFile]) != string(baseMenu[bootloader.MenuFile]) || string(menu[bootloader.LoaderConf]) != string(baseMenu[bootloader.LoaderConf]) {
					t.Fatalf("killed %s: active %s, menu changed:\n%s", tc.name, od.Record.Active, menu[bootloader.MenuFile])
				}
			} else if strings.Contains(string(menu[bootloader.MenuFile]), "slot-b") && od.SlotNamed("b").State.Status != ondisk.StatusComplete {
				t.Fatalf("killed %s: the menu boots slot b, which is not complete", tc.name)
			}
			evs, _ := deployUntil(t, bin, args, nil)
			if len(evs) == 0 || evs[len(evs)-1].Event != "result" {
				t.Fatalf("rerun: %+v", evs)
			}
			od = onDisk(t, p)
			if od.Record.Active != "b" || od.State.ImageID != v2.id {
				t.Fatalf("after the rerun: active %s, image %s", od.Record.Active, od.State.ImageID)
			}
			if code, out, _ := run(t, "verify", "--disk", p); code != 0 {
				t.Fatalf("verify after the rerun: exit %d\n%s", code, out)
			}
			menu = espFiles(t, p, bootloader.MenuFile)
			if !strings.Contains(string(menu[bootloader.MenuFile]), `"id": "slot-b"`) || !strings.Contains(string(menu[bootloader.MenuFile]), `"id": "slot-a"`) {
				t.Fatalf("menu after the rerun:\n%s", menu[bootloader.MenuFile])
			}
			if got := sha256Range(t, p, a.Start, a.Len); got != baseA {
				t.Fatal("the rerun wrote the active slot")
			}
			_ = v1
		})
	}
}
