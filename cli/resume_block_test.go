package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/netboot"
)

// TestDeployToABlockDeviceResumesAfterSIGKILL: a deploy onto a loop device
// (a fixed disk: UEFI only by default), with a boot menu, killed at several
// points and run again, completes and verifies identical. The rerun boots
// the way the first run planned, which the disk's journal records.
func TestDeployToABlockDeviceResumesAfterSIGKILL(t *testing.T) {
	need(t, "mkfs.ext4")
	testenv.NeedLoop(t)
	bin := buildBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data.img")
	randomFile(t, data, 32<<20)
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, []byte("not really a kernel"), 0o644)
	initrd := filepath.Join(dir, "initrd.img")
	os.WriteFile(initrd, []byte("not really an initrd"), 0o644)
	b := buildImage(t, "--store", filepath.Join(dir, "store"), "--name", "blk", "--partition", "root="+data,
		"--kernel", kernel, "--initrd", initrd, "--chunk-size", "256K")
	slow := httptestServer(t, slowChunks(&netboot.HTTP{Store: b.store, Decider: netboot.Static{}}, 3*time.Millisecond))

	checkpoints := func(n int) func(event) bool {
		seen := 0
		return func(e event) bool {
			if e.Event == "checkpoint" && e.Chunks > 0 {
				seen++
			}
			return seen >= n
		}
	}
	for _, tc := range []struct {
		name string
		stop func(event) bool
	}{
		{"right after partitioning", func(e event) bool { return e.Phase == "partitioned" }},
		{"after the first checkpoint", checkpoints(1)},
		{"after several checkpoints", checkpoints(3)},
		{"during verification", func(e event) bool { return e.Phase == "verify" }},
		{"at the boot loader", func(e event) bool { return e.Phase == "bootloader" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loop := testenv.LoopDevice(t, 1<<30)
			args := []string{"deploy", "--from", slow.URL, "--image", b.name, "--disk", loop, "--yes", "--json", "--checkpoint-interval", "30ms", "--slots", "1"}
			if _, killed := deployUntil(t, bin, args, tc.stop); !killed {
				t.Fatal("the deploy finished before it could be killed")
			}
			notComplete(t, loop)
			if st := onDisk(t, loop).State; st.Firmware != "uefi" {
				t.Errorf("the journal records firmware %q, want uefi (a fixed disk's default)", st.Firmware)
			}
			cmd := exec.Command(bin, args...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("rerun: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), `"resume":true`) {
				t.Errorf("the rerun did not resume:\n%.2000s", out)
			}
			if code, out, errs := run(t, "verify", "--disk", loop); code != 0 {
				t.Fatalf("verify after resume: exit %d\n%s%s", code, out, errs)
			}
			od := onDisk(t, loop)
			if od.State.Firmware != "uefi" {
				t.Errorf("after the resume the journal records firmware %q, want uefi", od.State.Firmware)
			}
			part, _ := od.State.Table.Find("root")
			if got := sha256Range(t, loop, part.Start, 32<<20); got != b.m.Partitions[0].Content.SHA256 {
				t.Fatal("resumed partition differs from the image")
			}
			if files := espFiles(t, loop, "/EFI/BOOT/BOOTX64.EFI"); len(files["/EFI/BOOT/BOOTX64.EFI"]) == 0 {
				t.Error("no boot loader on the ESP after the resume")
			}
		})
	}
}
