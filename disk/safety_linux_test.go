package disk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
)

// fakeMajor is a block major no kernel assigns (majors are 12 bits and the
// registered ones are far below), so opening a node with it reaches no
// device and the exclusive-open probe stays out of fake-tree tests.
const fakeMajor = 4000

func mkdev(major, minor uint64) uint64 {
	return (major&0xfff)<<8 | (major&^0xfff)<<32 | minor&0xff | (minor&^0xff)<<12
}

// fakeSys is a fake /proc and /sys under one temp dir.
type fakeSys struct {
	t    *testing.T
	root string
}

func newFakeSys(t *testing.T) *fakeSys {
	f := &fakeSys{t: t, root: t.TempDir()}
	f.write("proc/self/mountinfo", "")
	f.write("proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
	f.mkdir("sys/class/block")
	f.mkdir("sys/block")
	return f
}

func (f *fakeSys) view() sysView {
	return sysView{proc: filepath.Join(f.root, "proc"), sys: filepath.Join(f.root, "sys")}
}

func (f *fakeSys) write(rel, s string) {
	f.t.Helper()
	p := filepath.Join(f.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) mkdir(rel string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Join(f.root, rel), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) mount(dev, point, source string) {
	f.t.Helper()
	p := filepath.Join(f.root, "proc/self/mountinfo")
	old, err := os.ReadFile(p)
	if err != nil {
		f.t.Fatal(err)
	}
	line := fmt.Sprintf("%d 1 %s / %s rw,relatime shared:1 - ext4 %s rw\n", 30+strings.Count(string(old), "\n"), dev, point, source)
	f.write("proc/self/mountinfo", string(old)+line)
}

func (f *fakeSys) swap(path string) {
	f.t.Helper()
	p := filepath.Join(f.root, "proc/swaps")
	old, err := os.ReadFile(p)
	if err != nil {
		f.t.Fatal(err)
	}
	f.write("proc/swaps", string(old)+path+"\tpartition\t1048572\t\t0\t\t-2\n")
}

// disk adds a whole disk with partitions p1..pN, laid out as sysfs does:
// partitions are subdirectories of the disk with a "partition" file.
func (f *fakeSys) disk(name string, minor uint64, parts int) {
	base := "sys/class/block/" + name
	f.write(base+"/dev", fmt.Sprintf("%d:%d\n", fakeMajor, minor))
	f.write(base+"/ro", "0\n")
	f.mkdir(base + "/holders")
	f.mkdir(base + "/queue") // a subdirectory that is not a partition
	for i := 1; i <= parts; i++ {
		pn := fmt.Sprintf("%sp%d", name, i)
		pd := base + "/" + pn
		f.write(pd+"/dev", fmt.Sprintf("%d:%d\n", fakeMajor, minor+uint64(i)))
		f.write(pd+"/partition", fmt.Sprintf("%d\n", i))
		f.mkdir(pd + "/holders")
		// sysfs lists partitions in the class directory too.
		if err := os.Symlink(filepath.Join(f.root, pd), filepath.Join(f.root, "sys/class/block", pn)); err != nil {
			f.t.Fatal(err)
		}
	}
}

// loop adds loopN as a disk in /sys/class/block and /sys/block, attached
// to backing (if not empty).
func (f *fakeSys) loop(n int, backing string, parts int) {
	name := fmt.Sprintf("loop%d", n)
	f.disk(name, uint64(n)*16, parts)
	if err := os.Symlink(filepath.Join(f.root, "sys/class/block", name), filepath.Join(f.root, "sys/block", name)); err != nil {
		f.t.Fatal(err)
	}
	if backing != "" {
		f.write("sys/class/block/"+name+"/loop/backing_file", backing+"\n")
	}
}

// node makes a block device node for a fake device, which needs CAP_MKNOD.
func (f *fakeSys) node(name string, minor uint64) string {
	f.t.Helper()
	p := filepath.Join(f.root, "dev", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := syscall.Mknod(p, syscall.S_IFBLK|0o600, int(mkdev(fakeMajor, minor))); err != nil {
		testenv.Skipf(f.t, "cannot make a block device node (needs root/CAP_MKNOD): %v", err)
	}
	return p
}

func devStr(minor uint64) string { return fmt.Sprintf("%d:%d", fakeMajor, minor) }

func TestCheckTargetFakeBlock(t *testing.T) {
	tests := []struct {
		name  string
		setup func(f *fakeSys)
		want  error
		msg   []string // substrings of the message
	}{
		{"clean disk", func(f *fakeSys) {}, nil, nil},
		{"other disks mounted", func(f *fakeSys) {
			f.disk("other", 100, 2)
			f.mount(devStr(101), "/", "/dev/otherp1")
			f.mount(devStr(102), "/home", "/dev/otherp2")
			f.swap("/dev/otherp2")
		}, nil, nil},
		{"disk mounted", func(f *fakeSys) {
			f.mount(devStr(0), "/mnt/data", "/dev/fake")
		}, ErrMounted, []string{"/mnt/data", "/dev/fake "}},
		{"partition mounted, escaped mount point", func(f *fakeSys) {
			f.mount(devStr(2), `/mnt/my\040disk`, "/dev/fakep2")
			f.mount(devStr(2), `/mnt/my\040disk`, "/dev/fakep2") // listed twice, reported once
			f.mount(devStr(1), "/boot", "/dev/fakep1")
		}, ErrMounted, []string{"/dev/fakep2 (a partition of it) is mounted on /mnt/my disk", "/dev/fakep1 (a partition of it) is mounted on /boot"}},
		{"partition is the running root", func(f *fakeSys) {
			f.mount(devStr(1), "/boot", "/dev/fakep1")
			f.mount(devStr(2), "/", "/dev/fakep2")
			f.swap("/dev/fakep3")
		}, ErrRunningRoot, []string{"/dev/fakep2 (a partition of it) is mounted on /"}},
		{"btrfs: anonymous dev, named source", func(f *fakeSys) {
			f.mount("0:55", "/srv", "/dev/fakep3")
		}, ErrMounted, []string{"/dev/fakep3", "/srv"}},
		{"partition is swap, by device node", func(f *fakeSys) {
			// A node under another name: only its number can match.
			f.swap(f.node("elsewhere", 3))
		}, ErrSwap, []string{"/dev/fakep3 (a partition of it) is in use as swap"}},
		{"partition is swap, node gone", func(f *fakeSys) {
			f.swap("/dev/fakep1")
		}, ErrSwap, []string{"/dev/fakep1"}},
		{"swap file elsewhere", func(f *fakeSys) {
			f.swap("/swapfile")
		}, nil, nil},
		{"disk held", func(f *fakeSys) {
			f.mkdir("sys/class/block/fake/holders/md127")
		}, ErrHeld, []string{"/dev/fake is held by md127"}},
		{"partition held", func(f *fakeSys) {
			f.mkdir("sys/class/block/fake/fakep2/holders/dm-1")
			f.mkdir("sys/class/block/fake/fakep2/holders/dm-0")
		}, ErrHeld, []string{"/dev/fakep2 (a partition of it) is held by dm-0, dm-1"}},
		{"read-only", func(f *fakeSys) {
			f.write("sys/class/block/fake/ro", "1\n")
		}, ErrReadOnly, []string{"/dev/fake is read-only"}},
		{"mounted beats held and read-only", func(f *fakeSys) {
			f.write("sys/class/block/fake/ro", "1\n")
			f.mkdir("sys/class/block/fake/holders/dm-0")
			f.mount(devStr(1), "/boot", "/dev/fakep1")
		}, ErrMounted, []string{"/boot"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeSys(t)
			f.disk("fake", 0, 3)
			target := f.node("fake", 0)
			tc.setup(f)
			err := f.view().checkTarget(target)
			t.Log(err)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected refusal: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			for _, m := range append(tc.msg, target) {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q lacks %q", err, m)
				}
			}
		})
	}
}

func TestCheckTargetFakeUnknownDevice(t *testing.T) {
	// A device sysfs does not list is still checked by its number.
	f := newFakeSys(t)
	target := f.node("mystery", 200)
	if err := f.view().checkTarget(target); err != nil {
		t.Fatalf("clean unknown device refused: %v", err)
	}
	f.mount(devStr(200), "/data", "/dev/mystery")
	err := f.view().checkTarget(target)
	if !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), "device 4000:200 is mounted on /data") {
		t.Fatalf("got %v, want ErrMounted naming the device number", err)
	}
}

func TestCheckTargetFakeNoProc(t *testing.T) {
	// Without a mount table nothing can be proven safe.
	f := newFakeSys(t)
	f.disk("fake", 0, 1)
	target := f.node("fake", 0)
	if err := os.Remove(filepath.Join(f.root, "proc/self/mountinfo")); err != nil {
		t.Fatal(err)
	}
	if err := f.view().checkTarget(target); err == nil || !strings.Contains(err.Error(), "mount table") {
		t.Fatalf("got %v, want a mount table error", err)
	}
}

func TestCheckTargetFakeFile(t *testing.T) {
	tests := []struct {
		name  string
		setup func(f *fakeSys, img, link string)
		want  error
		msg   []string
	}{
		{"not attached", func(f *fakeSys, img, link string) {
			f.loop(0, "", 0)
			f.loop(1, "/some/other.img", 0)
		}, nil, nil},
		{"attached under another path", func(f *fakeSys, img, link string) {
			f.loop(0, "", 0)
			f.loop(3, link, 0)
		}, ErrHeld, []string{"attached to /dev/loop3", "losetup -d /dev/loop3"}},
		{"attached twice", func(f *fakeSys, img, link string) {
			f.loop(3, img, 0)
			f.loop(4, img, 0)
		}, ErrHeld, []string{"/dev/loop3, /dev/loop4"}},
		{"deleted file of the same name", func(f *fakeSys, img, link string) {
			f.loop(2, img+" (deleted)", 0)
		}, nil, nil},
		{"loop mounted", func(f *fakeSys, img, link string) {
			f.loop(5, img, 0)
			f.mount(devStr(5*16), "/mnt/img", "/dev/loop5")
		}, ErrMounted, []string{"attached to /dev/loop5", "/dev/loop5 is mounted on /mnt/img"}},
		{"loop partition mounted", func(f *fakeSys, img, link string) {
			f.loop(5, img, 2)
			f.mount(devStr(5*16+2), "/mnt/p2", "/dev/loop5p2")
		}, ErrMounted, []string{"/dev/loop5p2 (a partition of it) is mounted on /mnt/p2"}},
		{"worst of two loops wins", func(f *fakeSys, img, link string) {
			f.loop(1, img, 0)
			f.loop(6, img, 1)
			f.mkdir("sys/class/block/loop1/holders/dm-3")
			f.mount(devStr(6*16+1), "/", "/dev/loop6p1")
		}, ErrRunningRoot, []string{"attached to /dev/loop6", "mounted on /"}},
		{"loop is swap", func(f *fakeSys, img, link string) {
			f.loop(7, img, 0)
			f.swap("/dev/loop7")
		}, ErrSwap, []string{"attached to /dev/loop7", "in use as swap"}},
		{"loop held", func(f *fakeSys, img, link string) {
			f.loop(7, img, 0)
			f.mkdir("sys/class/block/loop7/holders/dm-0")
		}, ErrHeld, []string{"held by dm-0"}},
		{"read-only loop is still attached", func(f *fakeSys, img, link string) {
			f.loop(7, img, 0)
			f.write("sys/class/block/loop7/ro", "1\n")
		}, ErrHeld, []string{"losetup -d /dev/loop7"}},
		{"swap file", func(f *fakeSys, img, link string) {
			f.swap(strings.ReplaceAll(link, " ", `\040`))
		}, ErrSwap, []string{"swap file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeSys(t)
			img := filepath.Join(f.root, "disk.img")
			if err := os.WriteFile(img, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(f.root, "other name.img")
			if err := os.Link(img, link); err != nil {
				t.Fatal(err)
			}
			tc.setup(f, img, link)
			err := f.view().checkTarget(img)
			t.Log(err)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected refusal: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			for _, m := range append(tc.msg, img) {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q lacks %q", err, m)
				}
			}
		})
	}
}

func TestCheckTargetKinds(t *testing.T) {
	dir := t.TempDir()
	if err := CheckTarget(filepath.Join(dir, "new.img")); err != nil {
		t.Errorf("missing path refused: %v", err)
	}
	plain := filepath.Join(dir, "plain.img")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckTarget(plain); err != nil {
		t.Errorf("unattached file refused: %v", err)
	}
	for path, kind := range map[string]string{dir: "a directory", "/dev/null": "a character device"} {
		err := CheckTarget(path)
		if !errors.Is(err, ErrNotTarget) || !strings.Contains(err.Error(), path+" is "+kind) {
			t.Errorf("CheckTarget(%s) = %v, want ErrNotTarget naming it as %s", path, err, kind)
		}
	}
}

func TestSplitDev(t *testing.T) {
	for _, d := range []devNum{{8, 0}, {259, 3}, {7, 300}, {4000, 1 << 19}} {
		if got := splitDev(mkdev(d.major, d.minor)); got != d {
			t.Errorf("splitDev(mkdev(%v)) = %v", d, got)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/dev/null", &st); err == nil {
		if got := splitDev(st.Rdev); got != (devNum{1, 3}) {
			t.Errorf("/dev/null is %v, want 1:3", got)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/a\040b`:  "/mnt/a b",
		`/x\134y`:      `/x\y`,
		`/tab\011`:     "/tab\t",
		`/short\04`:    `/short\04`,
		`/plain`:       "/plain",
		`/not\999oct`:  `/not\999oct`,
		`\040leading`:  " leading",
		`/end\`:        `/end\`,
		`/two\040\040`: "/two  ",
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}

// Real tests: loop devices, a real mount, the running root.

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// attachLoop makes a sparse image of size bytes (after prep runs on it) and
// attaches it, detaching in cleanup even when the test fails.
func attachLoop(t *testing.T, size int64, prep func(img string)) (img, loop string) {
	t.Helper()
	testenv.NeedLoop(t)
	img = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if prep != nil {
		prep(img)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		testenv.Skipf(t, "losetup cannot attach a loop device here: %v: %s", err, out)
	}
	loop = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	return img, loop
}

// mountExt4 makes ext4 on dev and mounts it, unmounting in cleanup.
func mountExt4(t *testing.T, dev string) string {
	t.Helper()
	run(t, "mkfs.ext4", "-q", "-F", dev)
	dir := t.TempDir() // before the unmount cleanup, so removed after it
	if out, err := exec.Command("mount", "-t", "ext4", dev, dir).CombinedOutput(); err != nil {
		testenv.Skipf(t, "cannot mount ext4 here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func TestCheckTargetRealLoop(t *testing.T) {
	img, loop := attachLoop(t, 64<<20, nil)

	err := CheckTarget(img)
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "attached to "+loop) {
		t.Fatalf("attached image: got %v, want ErrHeld naming %s", err, loop)
	}
	if err := CheckTarget(loop); err != nil {
		t.Fatalf("idle loop device refused: %v", err)
	}

	// An exclusive opener leaves no trace in /proc or /sys.
	f, err := os.OpenFile(loop, os.O_RDONLY|syscall.O_EXCL, 0)
	if err != nil {
		t.Fatalf("exclusive open: %v", err)
	}
	err = CheckTarget(loop)
	f.Close()
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("exclusively opened loop device: got %v, want ErrHeld (busy)", err)
	}

	dir := mountExt4(t, loop)
	for _, target := range []string{loop, img} {
		err := CheckTarget(target)
		if !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), loop) {
			t.Errorf("mounted: CheckTarget(%s) = %v, want ErrMounted naming %s and %s", target, err, loop, dir)
		}
	}
}

func TestCheckTargetRealLoopPartition(t *testing.T) {
	testenv.NeedTool(t, "sgdisk", "partx", "mkfs.ext4")
	img, loop := attachLoop(t, 64<<20, func(img string) {
		// No -q: gdisk 1.0.9 silently writes nothing with it.
		run(t, "sgdisk", "-n1:0:+16M", "-n2:0:0", img)
	})
	// This kernel may have no partition-table parser; partx adds the
	// partitions itself, as on the target hosts it is a no-op at worst.
	if out, err := exec.Command("partx", "-a", loop).CombinedOutput(); err != nil && !strings.Contains(string(out), "busy") {
		testenv.Skipf(t, "partx -a %s: %v: %s", loop, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("partx", "-d", loop).Run() })
	part := loop + "p2"
	if _, err := os.Stat(part); err != nil {
		testenv.Skipf(t, "no partition node %s: %v", part, err)
	}
	if err := CheckTarget(loop); err != nil {
		t.Fatalf("idle partitioned loop device refused: %v", err)
	}

	dir := mountExt4(t, part)
	for _, target := range []string{loop, img} {
		err := CheckTarget(target)
		if !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), part+" (a partition of it) is mounted on "+dir) {
			t.Errorf("CheckTarget(%s) = %v, want ErrMounted naming %s and %s", target, err, part, dir)
		}
	}
}

func TestCheckTargetRealRoot(t *testing.T) {
	v := sysView{proc: "/proc", sys: "/sys"}
	mounts, err := v.mounts()
	if err != nil {
		testenv.Skipf(t, "no mount table: %v", err)
	}
	var root devNum
	for _, m := range mounts {
		if m.point == "/" {
			root = m.dev // the last "/" is the one in effect
		}
	}
	if root.major == 0 {
		testenv.Skipf(t, "the root filesystem is not on a block device (overlay, tmpfs, btrfs)")
	}
	b, ok, err := v.blockByDev(root)
	if err != nil || !ok {
		testenv.Skipf(t, "root device %v not in sysfs: %v", root, err)
	}
	disk := b.name
	// If root is a partition, its disk is the sysfs parent directory.
	if _, err := os.Stat(filepath.Join("/sys/class/block", b.name, "partition")); err == nil {
		real, err := filepath.EvalSymlinks(filepath.Join("/sys/class/block", b.name))
		testenv.Need(t, err)
		disk = filepath.Base(filepath.Dir(real))
	}
	for _, name := range []string{b.name, disk} {
		path := "/dev/" + name
		if _, err := os.Stat(path); err != nil {
			testenv.Skipf(t, "no device node %s", path)
		}
		err := CheckTarget(path)
		if !errors.Is(err, ErrRunningRoot) {
			t.Errorf("CheckTarget(%s) = %v, want ErrRunningRoot", path, err)
		}
		t.Log(err)
	}
}
