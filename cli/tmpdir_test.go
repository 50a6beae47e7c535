package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// imprintEntries lists what imprint made in dir.
func imprintEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "imprint-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestKilledBuildLeavesATempDirTheNextBuildRemoves(t *testing.T) {
	need(t, "mkfs.ext4")
	bin := buildBinary(t)
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	makeRootfs(t, root, 64<<20)
	args := []string{"build", "--store", filepath.Join(dir, "store"), "--name", "big", "--rootfs", root}

	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once its temporary directory holds something: the root
	// filesystem being made.
	prefix := "imprint-build-" + strconv.Itoa(cmd.Process.Pid) + "-"
	var left string
	for deadline := time.Now().Add(2 * time.Minute); left == "" && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		for _, n := range imprintEntries(t, tmp) {
			if ents, _ := os.ReadDir(filepath.Join(tmp, n)); strings.HasPrefix(n, prefix) && len(ents) > 0 {
				left = n
			}
		}
		if cmd.ProcessState != nil {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if left == "" {
		t.Fatalf("never saw a %s* directory with content in %s (saw %v)", prefix, tmp, imprintEntries(t, tmp))
	}
	if got := imprintEntries(t, tmp); len(got) == 0 {
		t.Fatal("the killed build left nothing behind; the test proves nothing")
	}

	// A child the build was starting when it died (mkfs.ext4) holds the
	// directory, and its lock, until its exec closes it: legitimately in
	// use until then.
	waitUnopened(t, filepath.Join(tmp, left))
	t.Setenv("TMPDIR", tmp)
	mustRun(t, args...)
	if got := imprintEntries(t, tmp); len(got) != 0 {
		t.Errorf("after the next build %s still holds %v (the killed build's was %s)", tmp, got, left)
	}
}

// waitUnopened waits until no process has dir open.
func waitUnopened(t *testing.T, dir string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
		open := false
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && l == dir {
				open = true
				break
			}
		}
		if !open {
			return
		}
	}
	t.Fatalf("%s is still open 30 s after its build was killed", dir)
}
