package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
	"golang.org/x/sys/unix"
)

// A state partition still mounted from an earlier try of this boot (Main
// tries a diskless boot again when assemble fails) is used as it is: the
// next try must not boot without it because the mount holds the device
// (OpenDisk's O_EXCL gives EBUSY).
func TestMountStateReusesItsMount(t *testing.T) {
	loop := testenv.LoopDevice(t, 64<<20)
	dir := filepath.Join(t.TempDir(), "state")
	var out bytes.Buffer
	a := &Agent{Console: &out}
	if err := a.mountState(loop, dir); err != nil {
		t.Fatalf("first mount: %v\n%s", err, out.String())
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "kept"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.mountState(loop, dir); err != nil {
		t.Fatalf("the second try: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "already mounted at "+dir+", using it") {
		t.Errorf("console %q does not say the mount was reused", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "kept")); err != nil {
		t.Errorf("the reused mount lost its file: %v", err)
	}
	if other := filepath.Join(t.TempDir(), "other"); mountedAt(loop, other) {
		t.Errorf("mountedAt says %s is mounted at %s", loop, other)
	}
}

// After a failed assemble the state partition is unmounted even when the
// persistent paths were already bound from it into the new root, so the
// next try can open it (O_EXCL) instead of booting without state.
func TestReleaseStateFreesThePartitionBoundIntoTheNewRoot(t *testing.T) {
	loop := testenv.LoopDevice(t, 64<<20)
	dir := filepath.Join(t.TempDir(), "state")
	newroot := filepath.Join(t.TempDir(), "newroot")
	var out bytes.Buffer
	a := &Agent{Console: &out}
	if err := a.mountState(loop, dir); err != nil {
		t.Fatalf("mount: %v\n%s", err, out.String())
	}
	if err := os.MkdirAll(newroot, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", newroot, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Unmount(newroot, unix.MNT_DETACH)
		_ = unix.Unmount(dir, unix.MNT_DETACH)
	})
	// What persist does for a persistent path (it binds into the real
	// /newroot, which a test must not touch).
	kept, target := filepath.Join(dir, "nodes", "node01", "var", "log"), filepath.Join(newroot, "var", "log")
	for _, d := range []string{kept, target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(kept, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := releaseState(newroot, dir); err != nil {
		t.Fatalf("releaseState: %v", err)
	}
	if err := a.mountState(loop, dir); err != nil {
		t.Fatalf("the next try: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "already mounted") {
		t.Errorf("the next try reused a mount that should be gone: %s", out.String())
	}
}
