package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
)

func TestFillIsRefusedWhenTheRootDoesNotFitInRAM(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name        string
		need, total int64
		fits        bool
	}{
		{"a small root in a big node", 400 * mib, 4096 * mib, true},
		{"exactly the data, slack and reserve", 400 * mib, 500*mib + fillReserve, true},
		{"one MiB short", 400 * mib, 499*mib + fillReserve, false},
		{"a 2 GiB root in 1 GiB", 2048 * mib, 1024 * mib, false},
	} {
		err := fillFits(tc.need, tc.total)
		if tc.fits != (err == nil) || (err != nil && !errors.Is(err, ErrFillTooBig)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestMemTotalReadsMeminfo(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("MemTotal:         512000 kB\nMemFree:          100 kB\n"), 0o644)
	if n, err := memTotal(good); err != nil || n != 512000<<10 {
		t.Errorf("memTotal = %d, %v", n, err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("MemFree:          100 kB\n"), 0o644)
	if _, err := memTotal(bad); err == nil || !strings.Contains(err.Error(), "no MemTotal") {
		t.Errorf("a meminfo without MemTotal: %v", err)
	}
}

func TestNonZeroBytesCountsOnlyDataChunks(t *testing.T) {
	// 3.5 chunks of 1 MiB: data, zeros, data, a short data chunk.
	c := &image.Content{Size: 3<<20 + 512<<10, Chunks: []string{"a", image.ZeroChunk, "b", "c"}}
	if got, want := c.DataBytes(1<<20), int64(2<<20+512<<10); got != want {
		t.Errorf("DataBytes = %d, want %d", got, want)
	}
}
