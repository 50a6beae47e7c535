package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCmdlineSwarmPeers(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int
		wantErr string
	}{
		{"imprint.source=http://a/", 0, ""},
		{"imprint.source=http://a/ imprint.swarm-peers=1", 1, ""},
		{"imprint.source=http://a/ imprint.swarm-peers=50", 50, ""},
		{"imprint.source=http://a/ imprint.swarm-peers=0", 0, "imprint.swarm-peers=0: want a number of peers from 1 to 200"},
		{"imprint.source=http://a/ imprint.swarm-peers=201", 0, "imprint.swarm-peers=201"},
		{"imprint.source=http://a/ imprint.swarm-peers=many", 0, "imprint.swarm-peers=many"},
		{"imprint.source=http://a/ imprint.swarm-peers", 0, "imprint.swarm-peers="},
	} {
		p, err := ParseCmdline(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || p.SwarmPeers != tc.want {
			t.Errorf("%q: peers %d, %v; want %d", tc.in, p.SwarmPeers, err, tc.want)
		}
	}
}

// The default peer count follows the node's RAM, so the worst case of
// the engine's per-peer buffers (16 MiB each) stays within an eighth of
// it, and never drops below the cap every node had before.
func TestSwarmPeersFollowRAMWithinBounds(t *testing.T) {
	dir := t.TempDir()
	meminfo := func(kB int64) string {
		p := filepath.Join(dir, fmt.Sprint(kB))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("MemTotal: %d kB\n", kB)), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		meminfo string
		param   int
		want    int
	}{
		{"512 MiB: the floor", meminfo(512 << 10), 0, MinSwarmPeers},
		{"1 GiB: the floor", meminfo(1 << 20), 0, 8},
		{"2 GiB", meminfo(2 << 20), 0, 16},
		{"3 GiB", meminfo(3 << 20), 0, 24},
		{"64 GiB: the ceiling", meminfo(64 << 20), 0, DefaultMaxSwarmPeers},
		{"no meminfo: the floor", filepath.Join(dir, "none"), 0, MinSwarmPeers},
		{"imprint.swarm-peers= wins over RAM", meminfo(64 << 20), 100, 100},
		{"imprint.swarm-peers= below the floor", meminfo(64 << 20), 2, 2},
	} {
		a := &Agent{Meminfo: tc.meminfo, Params: Params{SwarmPeers: tc.param}}
		if got := a.swarmPeers(); got != tc.want {
			t.Errorf("%s: %d peers, want %d", tc.name, got, tc.want)
		}
	}
	if peersOr(0) != MinSwarmPeers || peersOr(40) != 40 {
		t.Errorf("peersOr: %d, %d", peersOr(0), peersOr(40))
	}
}
