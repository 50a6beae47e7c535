package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
)

const testLayout = `# a node: ESP, the root, a data partition from the image, swap and scratch
esp      esp            100M   esp
root     root-x86-64    auto   image
data     linux-generic  auto   image
swap     swap           16M    local  swap
scratch  linux-generic  rest   local  ext4
`

// deployed builds an image with a root tree and a raw data partition and
// deploys it to target (a file, created, or a block device).
func deployed(t *testing.T, target string, extra ...string) (built, string) {
	t.Helper()
	need(t, "mkfs.ext4")
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	makeRootfs(t, rootfs, 3<<20)
	data := filepath.Join(dir, "data.img")
	randomFile(t, data, 5<<20)
	layout := filepath.Join(dir, "layout")
	os.WriteFile(layout, []byte(testLayout), 0o644)
	b := buildImage(t, "--store", filepath.Join(dir, "store"), "--name", "node", "--rootfs", rootfs,
		"--partition", "data="+data, "--layout", layout, "--chunk-size", "256K")
	args := append([]string{"deploy", "--from", b.store, "--image", b.name, "--disk", target, "--yes"}, extra...)
	mustRun(t, args...)
	return b, data
}

func checkDeployed(t *testing.T, disk string, b built, data string) {
	t.Helper()
	od := onDisk(t, disk)
	if od.State.Status != "complete" || od.State.ImageID != b.id || !od.State.Verified {
		t.Fatalf("state: %+v", od.State)
	}
	out, err := exec.Command("sgdisk", "-v", disk).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v %s: %v\n%s", disk, err, out)
	}
	tmp := t.TempDir()
	for _, p := range od.State.Table.Partitions {
		f := filepath.Join(tmp, p.Name)
		switch p.Name {
		case "root":
			want := b.m.Partitions[0].Content
			if got := sha256Range(t, disk, p.Start, want.Size); got != want.SHA256 {
				t.Errorf("root partition hashes to %s, the image to %s", got, want.SHA256)
			}
			extractRange(t, disk, p.Start, want.Size, f)
			if out, err := exec.Command("e2fsck", "-fn", f).CombinedOutput(); err != nil {
				t.Errorf("e2fsck -fn root: %v\n%s", err, out)
			}
		case "data":
			src, _ := os.ReadFile(data)
			extractRange(t, disk, p.Start, int64(len(src)), f)
			if out, err := exec.Command("cmp", data, f).CombinedOutput(); err != nil {
				t.Errorf("cmp data partition: %v %s", err, out)
			}
		case "esp":
			extractRange(t, disk, p.Start, p.Len, f)
			if out, err := exec.Command("fsck.vfat", "-n", f).CombinedOutput(); err != nil {
				t.Errorf("fsck.vfat -n esp: %v\n%s", err, out)
			}
		case "scratch":
			extractRange(t, disk, p.Start, p.Len, f)
			if out, err := exec.Command("e2fsck", "-fn", f).CombinedOutput(); err != nil {
				t.Errorf("e2fsck -fn scratch: %v\n%s", err, out)
			}
		case "swap":
			extractRange(t, disk, p.Start, p.Len, f)
			if out, _ := exec.Command("blkid", "-p", f).CombinedOutput(); !bytes.Contains(out, []byte(`TYPE="swap"`)) {
				t.Errorf("blkid swap: %s", out)
			}
		}
	}
}

func TestDeployToImageFileIsBitForBitAndVerifiable(t *testing.T) {
	need(t, "sgdisk", "e2fsck", "fsck.vfat", "blkid", "cmp")
	disk := filepath.Join(t.TempDir(), "disk.img")
	b, data := deployed(t, disk, "--size", "300M")
	checkDeployed(t, disk, b, data)

	code, out, _ := run(t, "verify", "--disk", disk)
	if code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("verify of a fresh deploy: exit %d\n%s", code, out)
	}
	if code, out, _ := run(t, "verify", "--full", "--disk", disk); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("verify --full of a fresh deploy: exit %d\n%s", code, out)
	}
	table := onDisk(t, disk).State.Table
	root, _ := table.Find("root")
	dataP, _ := table.Find("data")
	scratch, _ := table.Find("scratch")

	// A change in a local partition is not drift: it is not the image.
	flipBit(t, disk, scratch.Start+scratch.Len/2)
	if code, out, _ := run(t, "verify", "--disk", disk); code != 0 {
		t.Fatalf("scratch is node-local; verify said exit %d\n%s", code, out)
	}
	for _, tc := range []struct {
		name string
		off  int64
	}{
		{"root last byte", root.Start + b.m.Partitions[0].Content.Size - 1},
		{"data first byte", dataP.Start},
	} {
		flipBit(t, disk, tc.off)
		code, out, _ := run(t, "verify", "--disk", disk)
		if code != 1 || !strings.Contains(out, "DRIFTED") {
			t.Fatalf("%s: one flipped bit: verify exit %d, want 1\n%s", tc.name, code, out)
		}
		if code, out, _ := run(t, "verify", "--full", "--disk", disk); code != 1 || !strings.Contains(out, "DRIFTED") {
			t.Fatalf("%s: one flipped bit: verify --full exit %d, want 1\n%s", tc.name, code, out)
		}
		flipBit(t, disk, tc.off)
		if code, out, _ := run(t, "verify", "--disk", disk); code != 0 {
			t.Fatalf("%s: flipped back: exit %d\n%s", tc.name, code, out)
		}
	}
	code, out, _ = run(t, "verify", "--disk", filepath.Join(t.TempDir(), "missing.img"))
	if code != 2 {
		t.Fatalf("verify of a missing disk: exit %d, want 2\n%s", code, out)
	}
}

func TestDeployToLoopDevice(t *testing.T) {
	need(t, "losetup", "sgdisk", "e2fsck", "fsck.vfat", "blkid", "cmp")
	backing := filepath.Join(t.TempDir(), "loop.img")
	f, _ := os.Create(backing)
	f.Truncate(300 << 20)
	f.Close()
	out, err := exec.Command("losetup", "--find", "--show", backing).Output()
	if err != nil {
		testenv.Skipf(t, "losetup cannot attach a loop device here (%v): skipping the block-device round trip", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	// Old data on the device: zero chunks must really be zeroed.
	junk := bytes.Repeat([]byte{0xA5}, 1<<20)
	lf, err := os.OpenFile(loop, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < 300<<20; off += 1 << 20 {
		lf.WriteAt(junk, off)
	}
	lf.Close()

	b, data := deployed(t, loop)
	checkDeployed(t, loop, b, data)
	if code, out, _ := run(t, "verify", "--disk", loop); code != 0 {
		t.Fatalf("verify %s: exit %d\n%s", loop, code, out)
	}
	// The backing file says the same.
	exec.Command("sync").Run()
	checkDeployed(t, backing, b, data)
}

func TestBuildIsReproducible(t *testing.T) {
	need(t, "mkfs.ext4")
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	makeRootfs(t, rootfs, 1<<20)
	a := buildImage(t, "--store", filepath.Join(dir, "s1"), "--name", "r", "--rootfs", rootfs)
	b := buildImage(t, "--store", filepath.Join(dir, "s2"), "--name", "r", "--rootfs", rootfs)
	if a.id != b.id {
		t.Fatalf("same tree, two image ids: %s %s", a.id, b.id)
	}
	if a.m.Boot == nil || a.m.Boot.Kernel == nil || a.m.Boot.Initrd == nil || a.m.Boot.Cmdline != "ro" {
		t.Fatalf("kernel and initrd were not taken from /boot: %+v", a.m.Boot)
	}
	// One changed byte in the tree makes another image.
	os.WriteFile(filepath.Join(rootfs, "etc/hostname"), []byte("nodf\n"), 0o644)
	c := buildImage(t, "--store", filepath.Join(dir, "s3"), "--name", "r", "--rootfs", rootfs)
	if c.id == a.id {
		t.Fatal("a changed tree gave the same image id")
	}
}
