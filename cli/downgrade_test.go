package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoSilentDowngrade: with a stale mirror listed first, deploy without
// a version takes the newest version any source offers; an older version
// never replaces a newer one on the disk without --allow-downgrade.
func TestNoSilentDowngrade(t *testing.T) {
	dir := t.TempDir()
	fresh, stale := filepath.Join(dir, "fresh"), filepath.Join(dir, "stale")
	lay := filepath.Join(dir, "layout")
	os.WriteFile(lay, []byte("esp esp 64M esp\nroot root-x86-64 auto image\n"), 0o644)
	build := func(version string) built {
		root := filepath.Join(dir, "root-"+version)
		randomFile(t, root, 1<<20)
		return buildImage(t, "--store", fresh, "--name", "app", "--version", version, "--partition", "root="+root, "--layout", lay, "--chunk-size", "256K")
	}
	v1 := build("v1")
	if out, err := exec.Command("cp", "-a", fresh, stale).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	v2 := build("v2")

	disk := filepath.Join(dir, "d.img")
	deploy := func(args ...string) (int, string) {
		code, out, errs := run(t, append([]string{"deploy", "--disk", disk, "--size", "100M", "--yes"}, args...)...)
		return code, out + errs
	}
	if code, out := deploy("--from", stale, "--from", fresh, "--image", "app"); code != 0 {
		t.Fatalf("deploy: exit %d\n%s", code, out)
	}
	if id := onDisk(t, disk).State.ImageID; id != v2.id {
		t.Fatalf("deploy --image app with a stale mirror first installed %s, want v2 (%s); v1 is %s", id, v2.id, v1.id)
	}
	before := fileSum(t, disk)
	for _, args := range [][]string{
		{"--from", stale, "--image", "app"},
		{"--from", stale, "--from", fresh, "--image", "app:v1"},
	} {
		code, out := deploy(args...)
		if code == 0 || !strings.Contains(out, "app:v2") || !strings.Contains(out, "--allow-downgrade") {
			t.Errorf("deploy %s over v2: exit %d, want a refusal naming v2 and --allow-downgrade\n%s", strings.Join(args, " "), code, out)
		}
		if fileSum(t, disk) != before {
			t.Fatalf("the refused downgrade (%s) changed the disk", strings.Join(args, " "))
		}
	}
	if code, out := deploy("--from", stale, "--image", "app", "--allow-downgrade"); code != 0 {
		t.Fatalf("deploy --allow-downgrade: exit %d\n%s", code, out)
	}
	if id := onDisk(t, disk).State.ImageID; id != v1.id {
		t.Fatalf("after --allow-downgrade the disk holds %s, want v1 %s", id, v1.id)
	}
	// The same version again, and an upgrade, need no flag.
	for _, ref := range []string{"app:v1", "app"} {
		if code, out := deploy("--from", fresh, "--image", ref); code != 0 {
			t.Fatalf("deploy %s: exit %d\n%s", ref, code, out)
		}
	}
}
