package cli

import (
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/netboot"
)

// Three deploys at once with --swarm from one imprint serve (tracker and
// web seed on loopback): every disk verifies and holds the master's root.
func TestThreeDeploysInASwarm(t *testing.T) {
	b := treeImage(t)
	tr := &swarm.Tracker{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	srv := httptest.NewServer(&netboot.HTTP{Store: b.store, Decider: netboot.Static{}, SwarmTracker: tr})
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	var wg sync.WaitGroup
	outs := make([]string, 3)
	errs := make([]string, 3)
	codes := make([]int, 3)
	disks := make([]string, 3)
	for i := range 3 {
		disks[i] = filepath.Join(dir, sprintf("n%d.img", i))
		wg.Go(func() {
			codes[i], outs[i], errs[i] = run(t, "deploy", "--image", b.name, "--disk", disks[i], "--size", "100M", "--yes",
				"--from", srv.URL, "--swarm", "--swarm-listen", sprintf("127.0.0.%d:0", i+2), "--swarm-stall", "20s")
		})
	}
	wg.Wait()
	want := b.m.Partitions[0].Content.SHA256
	for i, d := range disks {
		if codes[i] != 0 {
			t.Fatalf("deploy %d: exit %d\n%s%s", i, codes[i], outs[i], errs[i])
		}
		if !strings.Contains(outs[i], "from the swarm") {
			t.Errorf("deploy %d took nothing from the swarm:\n%s%s", i, outs[i], errs[i])
		}
		if code, out, e := run(t, "verify", "--disk", d); code != 0 {
			t.Fatalf("verify %s: exit %d\n%s%s", d, code, out, e)
		}
		if got := rootSum(t, b, d); got != want {
			t.Errorf("%s: root hashes to %s, the master's to %s", filepath.Base(d), got, want)
		}
	}
}

func TestSwarmWithoutAServerIsRefused(t *testing.T) {
	b := treeImage(t)
	code, _, errs := run(t, "deploy", "--image", b.name, "--disk", filepath.Join(t.TempDir(), "d.img"), "--size", "100M", "--yes",
		"--from", b.store, "--swarm")
	if code == 0 || !strings.Contains(errs, "--swarm-server") {
		t.Fatalf("deploy --swarm from a directory only: exit %d, %s", code, errs)
	}
}
