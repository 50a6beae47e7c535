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
