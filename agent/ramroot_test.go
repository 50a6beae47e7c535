package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestARAMRootThatDoesNotFitIsRefusedUpFront(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name                    string
		need, free, size, total int64
		want                    []string // "" : fits
	}{
		{"fits", 365 * mib, 1000 * mib, 1000 * mib, 2000 * mib, nil},
		{"tmpfs too small", 2423 * mib, 480 * mib, 480 * mib, 960 * mib,
			[]string{"2423 MiB of data", "/run/imprint, which has 480 MiB free (of 480 MiB; MemTotal 960 MiB)", "imprint.root=ondemand"}},
		{"RAM too small for a big tmpfs", 900 * mib, 4000 * mib, 4000 * mib, 960 * mib,
			[]string{"900 MiB of data in RAM", "MemTotal is 960 MiB", "imprint.root=ondemand"}},
	} {
		err := ramFits(tc.need, "/run/imprint", tc.free, tc.size, tc.total)
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrRAMRootTooBig) {
			t.Errorf("%s: %v, want ErrRAMRootTooBig", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tc.name, err, w)
			}
		}
	}
}

// A real tmpfs of 8 MiB: its free space is what counts, not the RAM.
func TestARAMRootIsMeasuredAgainstItsTmpfs(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=8m"); err != nil {
		testenv.Skipf(t, "mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, 0) })
	meminfo := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(meminfo, []byte("MemTotal:        1982464 kB\nMemFree:  100 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ramRootFits(6<<20, dir, meminfo); err != nil {
		t.Errorf("6 MiB in an empty 8 MiB tmpfs: %v", err)
	}
	err := ramRootFits(9<<20, dir, meminfo)
	if !errors.Is(err, ErrRAMRootTooBig) || !strings.Contains(err.Error(), "which has 8 MiB free (of 8 MiB; MemTotal 1936 MiB)") {
		t.Errorf("9 MiB in an 8 MiB tmpfs: %v", err)
	}
}
