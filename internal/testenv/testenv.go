// Package testenv is the one place where a test gives up because the host
// lacks something: a tool, root, loop devices, network namespaces, QEMU.
//
// Normally such a test is skipped, so `go test` stays usable on a laptop.
// With IMPRINT_STRICT=1 (set by `make unit` and `make vmtest`, so by CI) it
// fails instead: a run that was meant to cover VMs, networks and loop
// devices cannot pass with them silently skipped.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// StrictEnv is the environment variable that turns skips into failures.
const StrictEnv = "IMPRINT_STRICT"

// Strict reports whether missing test prerequisites fail the test.
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// Skipf skips t, or fails it under IMPRINT_STRICT=1, saying what the host
// lacks. Use it only for the environment, never for -short or a test's
// own choice.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (%s=1: a missing prerequisite fails the test)", msg, StrictEnv)
	}
	t.Skip(msg)
}

// Require gives up on t unless ok; why says what is missing.
func Require(t testing.TB, ok bool, why string) {
	t.Helper()
	if !ok {
		Skipf(t, "%s", why)
	}
}

// Need gives up on t when err, a check of the host, is not nil.
func Need(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		Skipf(t, "%v", err)
	}
}

// NeedRoot gives up on t unless the test runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root")
}

// Tool returns the path of the program name, looking in /usr/sbin and /sbin
// too (they are often not in a user's PATH), or gives up on t.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	Skipf(t, "%s is not installed (make deps installs it)", name)
	return ""
}

// NeedTool gives up on t unless every named program is installed.
func NeedTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		Tool(t, n)
	}
}

// NeedFile gives up on t unless path exists; pkg names the Debian package
// that installs it.
func NeedFile(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Skipf(t, "%s is missing (Debian package %s): %v", path, pkg, err)
	}
}

// NeedLoop gives up on t unless it can attach loop devices: root, losetup
// and the loop driver. A test that then fails to attach one still goes
// through Skipf, since only trying shows whether the host allows it.
func NeedLoop(t testing.TB) {
	t.Helper()
	NeedRoot(t)
	NeedTool(t, "losetup")
	NeedFile(t, "/dev/loop-control", "the kernel's loop module")
}

// LoopDevice attaches a new sparse file of size bytes to a free loop
// device and detaches it when the test ends. It gives up on t like
// NeedLoop when loop devices cannot be had.
func LoopDevice(t testing.TB, size int64) string {
	t.Helper()
	NeedLoop(t)
	backing := filepath.Join(t.TempDir(), "loop.img")
	f, err := os.Create(backing)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
	if err != nil {
		Skipf(t, "losetup cannot attach a loop device here: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	return loop
}

// NeedNetNS gives up on t unless it may create network namespaces: root
// and iproute2.
func NeedNetNS(t testing.TB) {
	t.Helper()
	NeedRoot(t)
	NeedTool(t, "ip")
}

// Optional reports whether an optional part of a test can run (ok). When it
// cannot, the rest of the test still runs and why is logged; under
// IMPRINT_STRICT=1 the test fails instead, since a strict run promises that
// every part ran.
func Optional(t testing.TB, ok bool, why string) bool {
	t.Helper()
	if ok {
		return true
	}
	if Strict() {
		t.Errorf("%s (%s=1: a missing prerequisite fails the test)", why, StrictEnv)
	} else {
		t.Log(why)
	}
	return false
}
