package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/ondisk"
)

// verify reads the active slot by default and both with --all; export
// and serve take --slot. Slot b (active after the sync) holds v2, slot a
// v1: a flipped bit in slot a is invisible to a plain verify and drifts
// --all; export --slot a gives v1's image id.
func TestVerifyAllAndSlotFlags(t *testing.T) {
	dir := t.TempDir()
	storeDir, v1, v2 := syncImages(t, dir)
	p := filepath.Join(dir, "node.img")
	mustRun(t, "deploy", "--from", storeDir, "--image", "node:1", "--disk", p, "--size", "1G", "--slots", "2", "--yes", "--no-verify")
	// Before the sync slot b was never written: --all reads slot a only.
	if out := mustRun(t, "verify", "--disk", p, "--all"); strings.Count(out, "identical\n") != 1 || !strings.Contains(out, "in slot a (active)") {
		t.Fatalf("verify --all with slot b empty:\n%s", out)
	}
	if code, _, errs := run(t, "verify", "--disk", p, "--slot", "b"); code != 2 || !strings.Contains(errs, "slot b was never written") {
		t.Fatalf("verify --slot b (empty): exit %d %s", code, errs)
	}
	mustRun(t, "sync", "--from", storeDir, "--image", "node:2", "--disk", p)

	out := mustRun(t, "verify", "--disk", p, "--all", "--json")
	var reps []ondisk.Report
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r ondisk.Report
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("verify --all --json line %q: %v", l, err)
		}
		reps = append(reps, r)
	}
	if len(reps) != 2 || reps[0].Slot != "b" || !reps[0].Active || reps[0].ImageID != v2.id || reps[1].Slot != "a" || reps[1].Active || reps[1].ImageID != v1.id || !reps[0].Identical || !reps[1].Identical {
		t.Fatalf("verify --all: %+v", reps)
	}

	od := onDisk(t, p)
	a, _ := od.Record.Table.Find("root-a")
	flipBit(t, p, a.Start+12345)
	if code, out, _ := run(t, "verify", "--disk", p); code != 0 || !strings.Contains(out, "node:2 in slot b (active)") {
		t.Fatalf("verify (active slot b) after slot a changed: exit %d\n%s", code, out)
	}
	if code, out, _ := run(t, "verify", "--disk", p, "--all"); code != 1 || !strings.Contains(out, "DRIFTED") {
		t.Fatalf("verify --all after slot a changed: exit %d\n%s", code, out)
	}
	if code, _, _ := run(t, "verify", "--disk", p, "--slot", "a"); code != 1 {
		t.Fatalf("verify --slot a after it changed: exit %d", code)
	}
	flipBit(t, p, a.Start+12345)

	exp := filepath.Join(dir, "exported")
	if out := mustRun(t, "export", "--disk", p, "--slot", "a", "--out", exp); !strings.Contains(out, "exported node:1") || !strings.Contains(out, v1.id) {
		t.Fatalf("export --slot a:\n%s", out)
	}
	if out := mustRun(t, "export", "--disk", p, "--out", exp); !strings.Contains(out, "exported node:2") {
		t.Fatalf("export (active):\n%s", out)
	}
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"export", "--disk", p, "--slot", "c", "--out", exp}, `slot "c": want a or b`},
		{[]string{"verify", "--disk", p, "--slot", "a", "--all"}, "does not combine"},
		{[]string{"serve", "--store", storeDir, "--slot", "a"}, "give --disk"},
	} {
		if code, _, errs := run(t, tc.args...); code == 0 || !strings.Contains(errs, tc.says) {
			t.Errorf("%v: exit %d %s, want an error saying %s", tc.args, code, errs, tc.says)
		}
	}
}
