package tmpdir

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
)

// deadPID gives the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// sleepingChild starts a child that lives until the test ends.
func sleepingChild(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func TestNewNamesItsOwnerAndRemoveDeletes(t *testing.T) {
	parent := t.TempDir()
	d, err := New(parent, "build")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(d.Path) != parent {
		t.Errorf("made %s, want it in %s", d.Path, parent)
	}
	if pid, ok := Owner(filepath.Base(d.Path)); !ok || pid != os.Getpid() {
		t.Errorf("Owner(%s) = %d, %v; want our pid %d", filepath.Base(d.Path), pid, ok, os.Getpid())
	}
	os.WriteFile(filepath.Join(d.Path, "root.ext4"), []byte("x"), 0o644)
	p := d.Path
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("%s survived Remove: %v", p, err)
	}
	if err := d.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestNewRefusesANameThatWouldNotParseBack(t *testing.T) {
	for _, what := range []string{"", "grub-bios", "a/b"} {
		if _, err := New(t.TempDir(), what); err == nil {
			t.Errorf("New(%q) succeeded", what)
		}
	}
}

func TestOwner(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"imprint-build-42-123456", 42, true},
		{"imprint-grub_bios-7-1", 7, true},
		{"imprint-build-123456", 0, false},     // older imprint: no pid
		{"imprint-grub-bios-123456", 0, false}, // older imprint: "bios" is no pid
		{"imprint-ext4-998877.img", 0, false},  // older CreateTemp file
		{"imprint-build-0-1", 0, false},
		{"imprint-build-042-1", 0, false},
		{"imprint-build-42-", 0, false},
		{"other-build-42-1", 0, false},
	} {
		pid, ok := Owner(tc.name)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("Owner(%q) = %d, %v; want %d, %v", tc.name, pid, ok, tc.pid, tc.ok)
		}
	}
}

func TestSweepRemovesOnlyDirectoriesOfGoneProcesses(t *testing.T) {
	parent := t.TempDir()
	dead := deadPID(t)
	mk := func(name string) string {
		p := filepath.Join(parent, name)
		if err := os.MkdirAll(filepath.Join(p, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(p, "sub", "root.ext4"), []byte("stale"), 0o644)
		return p
	}
	stale := mk(fmt.Sprintf("imprint-build-%d-111", dead))
	staleExt4 := mk(fmt.Sprintf("imprint-ext4-%d-222", dead))
	ours := mk(fmt.Sprintf("imprint-build-%d-333", os.Getpid()))
	child := mk(fmt.Sprintf("imprint-build-%d-444", sleepingChild(t)))
	oldStyle := mk("imprint-build-" + strconv.Itoa(dead)) // an older imprint's name
	foreign := mk(fmt.Sprintf("someone-build-%d-555", dead))
	// A dead pid here, yet the lock is held: the owner runs in another PID
	// namespace that shares this directory.
	lockedDir := mk(fmt.Sprintf("imprint-build-%d-666", dead))
	f, err := os.Open(lockedDir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := hold(f); err != nil {
		t.Fatal(err)
	}
	// A file with a matching name is not one of ours (New makes directories).
	file := filepath.Join(parent, fmt.Sprintf("imprint-build-%d-777", dead))
	os.WriteFile(file, nil, 0o644)
	// Another user's directory is never ours to remove.
	otherUser := mk(fmt.Sprintf("imprint-build-%d-888", dead))
	chowned := os.Geteuid() == 0 && os.Chown(otherUser, 65534, 65534) == nil

	removed, err := Sweep(parent)
	if err != nil {
		t.Fatal(err)
	}
	gone := map[string]bool{}
	for _, s := range removed {
		gone[s.Path] = true
		if s.PID != dead {
			t.Errorf("removed %s for pid %d, want %d", s.Path, s.PID, dead)
		}
	}
	want := map[string]bool{stale: true, staleExt4: true}
	keep := []string{ours, child, oldStyle, foreign, lockedDir, file}
	if chowned {
		keep = append(keep, otherUser)
	}
	for p := range want {
		if _, err := os.Stat(p); !os.IsNotExist(err) || !gone[p] {
			t.Errorf("%s of dead pid %d: still there or not reported (err %v, reported %v)", filepath.Base(p), dead, err, gone[p])
		}
	}
	for _, p := range keep {
		if _, err := os.Stat(p); err != nil || gone[p] {
			t.Errorf("%s should be kept: %v (reported removed: %v)", filepath.Base(p), err, gone[p])
		}
	}
	if len(removed) != len(want) {
		t.Errorf("removed %d entries, want %d: %v", len(removed), len(want), removed)
	}
}

func TestSweepKeepsADirectoryWhoseOwnerHoldsItsLock(t *testing.T) {
	// The lock alone protects a live owner: New's lock on a directory
	// renamed to a dead pid's name still keeps Sweep away.
	parent := t.TempDir()
	d, err := New(parent, "build")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Remove()
	if d.lock == nil {
		testenv.Skipf(t, "the filesystem of %s has no flock", parent)
	}
	renamed := filepath.Join(parent, fmt.Sprintf("imprint-build-%d-1", deadPID(t)))
	if err := os.Rename(d.Path, renamed); err != nil {
		t.Fatal(err)
	}
	d.Path = renamed
	if removed, err := Sweep(parent); err != nil || len(removed) != 0 {
		t.Fatalf("Sweep removed %v (err %v) while its owner held the lock", removed, err)
	}
	// Without the lock it goes.
	if _, err := os.Stat(renamed); err != nil {
		t.Fatal(err)
	}
	d.lock.Close()
	d.lock = nil
	if removed, err := Sweep(parent); err != nil || len(removed) != 1 {
		t.Fatalf("Sweep after the owner let go: removed %v, err %v", removed, err)
	}
}

func TestSweepOfAMissingDirectoryNamesIt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope")
	if _, err := Sweep(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Sweep(%s) = %v, want an error naming it", p, err)
	}
}
