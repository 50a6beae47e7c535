package builder

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/store"
	"golang.org/x/sys/unix"
)

var treeEntries = []string{
	"etc/hostname", "etc/os-release", "usr/bin/tool", "usr/lib/libx.so.1",
	"usr/lib/libx.so -> libx.so.1", "var/empty/", "home/user/notes.txt",
}

// makeTimedTree makes the tree with fixed modification times and the given
// access time, as an unpack (tar -x) would; change times are "now".
func makeTimedTree(t *testing.T, dir string, atime time.Time) {
	t.Helper()
	makeTree(t, dir, treeEntries, nil)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	// Deepest first, so setting a file's times does not move its
	// directory's afterwards.
	var paths []string
	filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	for i := len(paths) - 1; i >= 0; i-- {
		if err := lutimes(paths[i], atime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func lutimes(p string, atime, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func ctimeSec(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ctim.Sec
}

// The same tree content must give the same image, however its files' access
// and change times came about: mkfs.ext4 -d copies both, treeDigest hashes
// neither.
func TestBuildRootfsIgnoresAccessAndChangeTimes(t *testing.T) {
	needMkfs(t)
	build := func(root string) string {
		t.Helper()
		st, err := store.CreateDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		r, err := Build(t.Context(), Options{Store: st, Name: "x", Version: "v1", Rootfs: root, NoKernel: true})
		if err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	one := t.TempDir()
	makeTimedTree(t, one, time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC))
	id1 := build(one)

	// The same tree unpacked again, later, then read (atime), chmod-ed and
	// back (ctime).
	two := t.TempDir()
	makeTimedTree(t, two, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	tool := filepath.Join(two, "usr/bin/tool")
	for ctimeSec(t, tool) <= ctimeSec(t, filepath.Join(one, "usr/bin/tool")) {
		time.Sleep(50 * time.Millisecond)
		if err := os.Chmod(tool, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(tool, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(two, "etc/hostname"), time.Now(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if id2 := build(two); id2 != id1 {
		t.Errorf("the same tree with other access/change times built to image %s, first %s", id2, id1)
	}
}

// normalizeTimes rewrites inodes behind e2fsprogs' back: the result must
// be a clean filesystem whose inodes carry atime = ctime = mtime.
func TestNormalizeTimesLeavesCleanFilesystem(t *testing.T) {
	needMkfs(t)
	testenv.NeedTool(t, "e2fsck", "debugfs")
	root := t.TempDir()
	makeTimedTree(t, root, time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC))
	out := filepath.Join(t.TempDir(), "root.ext4")
	if err := makeExt4(t.Context(), root, out, 32<<20, "digest", time.Unix(1700000000, 0), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("e2fsck", "-fn", out).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, b)
	}
	for _, p := range []string{"/usr/bin/tool", "/usr/lib/libx.so", "/var/empty", "/"} {
		b, err := exec.Command("debugfs", "-R", "stat "+p, out).Output()
		if err != nil {
			t.Fatalf("debugfs stat %s: %v", p, err)
		}
		times := map[string]string{}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(l), ": ")
			if ok && (k == "atime" || k == "ctime" || k == "mtime") {
				times[k] = v
			}
		}
		if times["mtime"] == "" || times["atime"] != times["mtime"] || times["ctime"] != times["mtime"] {
			t.Errorf("%s: times %v, want atime = ctime = mtime", p, times)
		}
	}
	// Already normal: nothing left to change.
	if n, err := normalizeTimes(out); err != nil || n != 0 {
		t.Errorf("second pass changed %d inodes (%v), want 0", n, err)
	}
}

func TestNormalizeTimesRejectsNonExt4(t *testing.T) {
	p := filepath.Join(t.TempDir(), "zeros")
	if err := os.WriteFile(p, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := normalizeTimes(p); err == nil || !strings.Contains(err.Error(), "no ext4 superblock") {
		t.Errorf("got %v, want an error saying there is no ext4 superblock", err)
	}
}
