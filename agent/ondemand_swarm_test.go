package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
)

// rootReader is what the root server builds for a's on-demand root of m
// with imprint.swarm=1: the config goes through JSON, as through the pipe.
func rootReader(t *testing.T, a *Agent, m *image.Manifest) (*ondemand.Reader, *swarm.OnDemand) {
	t.Helper()
	rp, err := m.RootPartition()
	if err != nil {
		t.Fatal(err)
	}
	cfg := a.ondemandSwarm(m, rp)
	if cfg == nil {
		t.Fatalf("no swarm with imprint.swarm=1: %s", a.Console.(*bytes.Buffer))
	}
	raw, err := json.Marshal(serverConfig{Content: rp.Content, Swarm: cfg})
	if err != nil {
		t.Fatal(err)
	}
	var got serverConfig
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	peers, node, err := joinRootSwarm(got.Swarm, got.Content)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	t.Cleanup(peers.Leave)
	srcs, err := a.sources()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := image.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	r, err := ondemand.New(ondemand.Options{Content: rp.Content, ChunkSize: m.ChunkSize, Fetcher: fetch.New(srcs, fetch.Options{}), Decoder: dec, CacheBytes: 1 << 20, Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	return r, peers
}

// With imprint.swarm=1 an on-demand root is in the image's swarm: the
// first node reads its root from the sources and seeds it; a second one,
// the server's chunks off, reads it from the first.
func TestAnOndemandRootSeedsWhatItRead(t *testing.T) {
	m, srv, url := swarmImage(t)
	rp, _ := m.RootPartition()
	var c1, c2 bytes.Buffer
	first, p1 := rootReader(t, &Agent{Console: &c1, SwarmListen: "127.0.0.7:0", Params: Params{Sources: []string{url}, Swarm: true}}, m)
	whole := make([]byte, rp.Content.Size)
	if err := first.ReadAt(t.Context(), whole, 0); err != nil {
		t.Fatal(err)
	}
	if image.HashBytes(whole) != rp.Content.SHA256 {
		t.Fatal("the first node's root differs from the image's")
	}
	srv.off.Store(true)
	second, p2 := rootReader(t, &Agent{Console: &c2, SwarmListen: "127.0.0.8:0", Params: Params{Sources: []string{url}, Swarm: true}}, m)
	again := make([]byte, rp.Content.Size)
	// Its sources are down: a read the swarm does not serve would wait for
	// ever, so the test bounds it.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := second.ReadAt(ctx, again, 0); err != nil {
		var e1, e2 strings.Builder
		p1.WriteStatus(&e1)
		p2.WriteStatus(&e2)
		t.Fatalf("%v\nfirst node: %+v, swarm %+v\n%s\nsecond node: %+v, swarm %+v\n%s", err, first.Stats(), p1.Stats(), e1.String(), second.Stats(), p2.Stats(), e2.String())
	}
	if !bytes.Equal(again, whole) {
		t.Fatal("the second node's root differs from the first's")
	}
	want := rp.Content.DataBytes(m.ChunkSize)
	if st := second.Stats(); st.PeerBytes != want {
		t.Fatalf("second node: %d bytes from peers, want the root's %d: %+v", st.PeerBytes, want, st)
	}
}

// Without imprint.swarm=1, or without an http(s) source for the tracker,
// the root is not in a swarm, and the console says why in the second case.
func TestAnOndemandRootWithoutTheSwarm(t *testing.T) {
	m, _, url := swarmImage(t)
	rp, err := m.RootPartition()
	if err != nil {
		t.Fatal(err)
	}
	var c bytes.Buffer
	if cfg := (&Agent{Console: &c, Params: Params{Sources: []string{url}}}).ondemandSwarm(m, rp); cfg != nil {
		t.Fatal("a swarm without imprint.swarm=1")
	}
	if cfg := (&Agent{Console: &c, Params: Params{Sources: []string{"/srv/store"}, Swarm: true}}).ondemandSwarm(m, rp); cfg != nil || !strings.Contains(c.String(), "no http(s) imprint.source=") {
		t.Fatalf("a swarm with no http source: %v, console %q", cfg, c.String())
	}
	// A node whose RAM could not hold the root it would keep in the swarm.
	small := filepath.Join(t.TempDir(), "meminfo")
	os.WriteFile(small, []byte("MemTotal:          1024 kB\n"), 0o644)
	c.Reset()
	if cfg := (&Agent{Console: &c, Meminfo: small, Params: Params{Sources: []string{url}, Swarm: true}}).ondemandSwarm(m, rp); cfg != nil || !strings.Contains(c.String(), "imprint.swarm=1 refused for the on-demand root") || !strings.Contains(c.String(), "MemTotal is 1 MiB") {
		t.Fatalf("a swarm on a node too small to keep its root: %v, console %q", cfg, c.String())
	}
	// One whose RAM holds the root and its pieces under way, but not its
	// peers' requested blocks at worst as well.
	need := rp.Content.DataBytes(m.ChunkSize) + swarmPiecesInFlight*2*m.ChunkSize
	tight := filepath.Join(t.TempDir(), "meminfo")
	os.WriteFile(tight, []byte(fmt.Sprintf("MemTotal: %d kB\n", (need+need/4+fillReserve+(1<<20))>>10)), 0o644)
	if err := fillFits(need, need+need/4+fillReserve+(1<<20)); err != nil {
		t.Fatalf("the root alone should fit: %v", err)
	}
	c.Reset()
	if cfg := (&Agent{Console: &c, Meminfo: tight, Params: Params{Sources: []string{url}, Swarm: true}}).ondemandSwarm(m, rp); cfg != nil || !strings.Contains(c.String(), "with 128 MiB for 8 peers' requested blocks at worst") {
		t.Fatalf("a swarm on a node without room for its peers' buffers: %v, console %q", cfg, c.String())
	}
}
