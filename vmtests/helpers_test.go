//go:build vmtest

package vmtests

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/cli"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// requireQEMU gives up on the test (skip, or fail under IMPRINT_STRICT=1),
// saying what to install, when the host cannot run VMs; anything else that
// is missing fails the test.
func requireQEMU(t *testing.T) {
	t.Helper()
	testenv.Need(t, qemu.Available())
}

// buildFixture builds the test system and logs how long it took: the first
// build downloads and unpacks the kernel, later ones reuse the cache.
func buildFixture(t *testing.T) *fixture.Fixture {
	t.Helper()
	begin := time.Now()
	fx, err := fixture.Build(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range fx.InitrdModules {
		names = append(names, m.Name)
	}
	t.Logf("fixture built in %v: kernel %s (%s %s), initrd modules %s", time.Since(begin).Round(time.Millisecond),
		fx.KernelVersion, fx.Source.Package, fx.Source.Version, strings.Join(names, " "))
	return fx
}

// imprint runs the imprint command line in-process and returns its output.
func imprint(t *testing.T, args ...string) []byte {
	t.Helper()
	var out, errb bytes.Buffer
	begin := time.Now()
	code := cli.Run(t.Context(), args, cli.Stdio{In: strings.NewReader(""), Out: &out, Err: &errb})
	if code != 0 {
		t.Fatalf("imprint %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	t.Logf("imprint %s (%v)", args[0], time.Since(begin).Round(time.Millisecond))
	return out.Bytes()
}

type diskPartition struct {
	Index      int
	Name, GUID string
	Start, Len int64
}

// partitionNamed reads the disk's GPT through imprint inspect --json.
func partitionNamed(t *testing.T, disk, name string) diskPartition {
	t.Helper()
	var info struct{ Partitions []diskPartition }
	out := imprint(t, "inspect", disk, "--json")
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("imprint inspect --json: %v\n%s", err, out)
	}
	// On a disk with root slots, an image partition P is P-a and P-b; a
	// fresh deploy writes slot a.
	for _, n := range []string{name, name + "-a"} {
		for _, p := range info.Partitions {
			if p.Name == n {
				return p
			}
		}
	}
	t.Fatalf("no partition %q on %s: %+v", name, disk, info.Partitions)
	return diskPartition{}
}

func hashRange(t *testing.T, path string, off, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// startVM starts a machine that is killed when the test ends, whatever
// happens. A failed test logs the whole console: its directory, with the
// log file, is gone after the test.
func startVM(t *testing.T, cfg qemu.Config) *qemu.VM {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	vm, err := qemu.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Close()
		if t.Failed() {
			t.Logf("qemu: %s\nconsole:\n%s", strings.Join(vm.Args(), " "), vm.Console())
		}
	})
	return vm
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, strings.TrimRight(l, "\r"))
		}
	}
	return strings.Join(out, "\n")
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
