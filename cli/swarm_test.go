package cli

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
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

// seedOffSwitch is an imprint server whose web seed can be turned off.
type seedOffSwitch struct {
	h   http.Handler
	off atomic.Bool
}

func (s *seedOffSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.off.Load() && strings.HasPrefix(r.URL.Path, "/swarm/data/") {
		http.Error(w, "web seed off", http.StatusServiceUnavailable)
		return
	}
	s.h.ServeHTTP(w, r)
}

// syncResult runs a sync with --json and gives its result.
func syncResult(t *testing.T, args ...string) deploy.SyncResult {
	t.Helper()
	code, out, errs := run(t, append([]string{"sync", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("sync %v: exit %d\n%s%s", args, code, out, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var r struct {
		Event  string            `json:"event"`
		Result deploy.SyncResult `json:"result"`
	}
	if err := jsonUnmarshal(lines[len(lines)-1], &r); err != nil || r.Event != "result" {
		t.Fatalf("sync's last line %q: %v", lines[len(lines)-1], err)
	}
	return r.Result
}

// Two nodes with v1 sync to v2 with --swarm: the first takes the chunks
// it lacks from the server's web seed, then (web seed off) the second
// takes them from the first, which seeds its new slot; the chunks both
// already held come from their own disks. The first fetches no chunk over
// HTTP, and both slots hold v2's root.
func TestTwoSyncsThroughTheSwarm(t *testing.T) {
	dir := t.TempDir()
	storeDir, _, v2 := syncImages(t, dir)
	tr := &swarm.Tracker{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Interval: time.Second}
	sw := &seedOffSwitch{h: &netboot.HTTP{Store: storeDir, Decider: netboot.Static{}, SwarmTracker: tr}}
	srv := httptestServer(t, sw)
	disks := []string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")}
	mustRun(t, "deploy", "--from", storeDir, "--image", "node:1", "--disk", disks[0], "--size", "1G", "--slots", "2", "--yes", "--no-verify")
	if err := disk.CopySparseFile(disks[0], disks[1]); err != nil {
		t.Fatal(err)
	}
	t.Logf("deployed")
	// all: the swarm must give every chunk the disk lacks; otherwise
	// some, the rest coming over HTTP.
	syncTo := func(d, ip string, all bool) deploy.SyncResult {
		r := syncResult(t, "--from", srv.URL, "--image", "node:2", "--disk", d, "--verify",
			"--swarm", "--swarm-listen", ip+":0", "--swarm-stall", "10s")
		if r.FromSwarm == 0 || r.FromSwarm+r.Fetched != r.Plan.ToFetch || (all && r.Fetched != 0) {
			t.Fatalf("%s: %d bytes from the swarm and %d over HTTP; %d to fetch", filepath.Base(d), r.FromSwarm, r.Fetched, r.Plan.ToFetch)
		}
		// The plan counts the partitions only; the kernel is read from the ESP too.
		if r.Plan.Local == 0 || r.Local < r.Plan.Local {
			t.Errorf("%s: %d bytes from the disk, the plan said %d", filepath.Base(d), r.Local, r.Plan.Local)
		}
		t.Logf("%s: synced in %v", filepath.Base(d), r.Elapsed)
		return r
	}
	syncTo(disks[0], "127.0.0.2", true)

	// The first node seeds its new slot.
	n, err := swarm.NewNode(swarm.Options{Listen: "127.0.0.3:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	d, err := disk.OpenDisk(disks[0], disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	rootB, _ := onDisk(t, disks[0]).State.Table.Find("root-b")
	p := v2.m.Partitions[0]
	if _, err := n.Join(v2.m, srv.URL, []swarm.Place{{Content: p.Content, Target: disk.Section{D: d, Off: rootB.Start, Len: rootB.Len},
		Have: func(int) bool { return true }}}); err != nil {
		t.Fatal(err)
	}
	sw.off.Store(true)
	// Every chunk from the one seeding peer (it once stopped after 31).
	syncTo(disks[1], "127.0.0.4", true)

	for _, d := range disks {
		od := onDisk(t, d)
		if od.Record.Active != "b" || od.State.ImageID != v2.id {
			t.Fatalf("%s: active slot %s holds %s, want b with %s", filepath.Base(d), od.Record.Active, od.State.ImageID, v2.id)
		}
		if got := sha256Range(t, d, rootB.Start, p.Content.Size); got != p.Content.SHA256 {
			t.Errorf("%s: slot b's root hashes to %s, v2's to %s", filepath.Base(d), got, p.Content.SHA256)
		}
		if code, out, e := run(t, "verify", "--disk", d); code != 0 {
			t.Fatalf("verify %s: exit %d\n%s%s", d, code, out, e)
		}
	}
}

// A deployed disk is seeded from the slot the deploy wrote: slot b's
// root, not slot a's (which may hold another image).
func TestSeedTheSlotDeployed(t *testing.T) {
	slotted := &layout.Table{Partitions: []layout.Placed{
		{Spec: layout.Spec{Name: "esp"}, Start: 1 << 20},
		{Spec: layout.Spec{Name: "root-a"}, Start: 2 << 20},
		{Spec: layout.Spec{Name: "root-b"}, Start: 3 << 20},
	}}
	one := &layout.Table{Partitions: []layout.Placed{{Spec: layout.Spec{Name: "root"}, Start: 4 << 20}}}
	for _, tc := range []struct {
		table *layout.Table
		slot  string
		start int64 // 0: refused
	}{
		{slotted, "b", 3 << 20},
		{slotted, "a", 2 << 20},
		{one, "", 4 << 20},
		{one, "b", 0},
		{slotted, "", 0},
	} {
		pl, err := seedPartition(tc.table, "root", tc.slot)
		switch {
		case tc.start == 0 && err == nil:
			t.Errorf("slot %q: seeded %s, want an error", tc.slot, pl.Name)
		case tc.start != 0 && err != nil:
			t.Errorf("slot %q: %v", tc.slot, err)
		case pl.Start != tc.start:
			t.Errorf("slot %q: seeded %s at %d, want the partition at %d", tc.slot, pl.Name, pl.Start, tc.start)
		}
	}
}

// imprint serve's own seeding peer gives a deploy the whole image with
// the web seed off and no other node in the swarm: every byte of the
// root from the swarm, the disk verifies.
func TestADeployFromTheServersSeedingPeer(t *testing.T) {
	b := treeImage(t)
	tr := &swarm.Tracker{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Interval: time.Second}
	peer, err := swarm.NewNode(swarm.Options{Listen: "127.0.0.5:0", AllowedNets: tr.Allowed})
	if err != nil {
		t.Fatal(err)
	}
	h := &netboot.HTTP{Store: b.store, Decider: netboot.Static{}, SwarmTracker: tr, SwarmPeer: peer}
	t.Cleanup(func() { h.CloseSwarm() })
	sw := &seedOffSwitch{h: h}
	sw.off.Store(true)
	srv := httptestServer(t, sw)
	h.Public = srv.URL + "/"
	d := filepath.Join(t.TempDir(), "n.img")
	code, out, e := run(t, "deploy", "--image", b.name, "--disk", d, "--size", "100M", "--yes",
		"--from", srv.URL, "--swarm", "--swarm-listen", "127.0.0.6:0", "--swarm-stall", "20s")
	if code != 0 {
		t.Fatalf("deploy: exit %d\n%s%s", code, out, e)
	}
	root := b.m.Partitions[0].Content
	nonZero := int64(0)
	for i, sum := range root.Chunks {
		if sum != image.ZeroChunk {
			nonZero += min(b.m.ChunkSize, root.Size-int64(i)*b.m.ChunkSize)
		}
	}
	if want := layout.HumanSize(nonZero) + " from the swarm"; !strings.Contains(out, want) {
		t.Fatalf("want %q (the root's non-zero chunks, all from the seeding peer):\n%s%s", want, out, e)
	}
	if code, out, e := run(t, "verify", "--disk", d); code != 0 {
		t.Fatalf("verify %s: exit %d\n%s%s", d, code, out, e)
	}
	if got := rootSum(t, b, d); got != root.SHA256 {
		t.Errorf("root hashes to %s, the master's to %s", got, root.SHA256)
	}
}
