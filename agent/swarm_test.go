package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/builder"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/store"
)

// The agent starts its seeder as /proc/self/exe with argv[0] SeederArgv0,
// as cmd/imprint dispatches it; in tests that binary is this one.
func TestMain(m *testing.M) {
	if len(os.Args) > 0 && os.Args[0] == SeederArgv0 {
		if SeedMain(os.Stdout) != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// swarmServer is an imprint serve (tracker on loopback, web seed) whose
// web seed and chunk routes can be turned off, so a node can only get
// the image from its peers.
type swarmServer struct {
	h   http.Handler
	off atomic.Bool
}

func (s *swarmServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.off.Load() && (strings.HasPrefix(r.URL.Path, "/swarm/data/") || strings.HasPrefix(r.URL.Path, "/chunks/")) {
		http.Error(w, "off", http.StatusServiceUnavailable)
		return
	}
	s.h.ServeHTTP(w, r)
}

// swarmImage builds an image whose root is 1.5 MiB of random bytes then
// 0.5 MiB of zeros, in 64 KiB chunks (fewer pieces than the engine's
// one-peer stall, see docs/scale.md), and serves it.
func swarmImage(t *testing.T) (*image.Manifest, *swarmServer, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.CreateDir(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 2<<20)
	rand.Read(data[:3<<19])
	root := filepath.Join(dir, "root.img")
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(root, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kernel, []byte("not really a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := builder.Build(context.Background(), builder.Options{Store: st, Name: "n", Version: "1", ChunkSize: 64 << 10,
		Partitions: []builder.PartitionFile{{Name: "root", Path: root}}, Kernel: kernel, TmpDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tr := &swarm.Tracker{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Interval: time.Second}
	s := &swarmServer{h: &netboot.HTTP{Store: st.Root, Decider: netboot.Static{}, SwarmTracker: tr}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return res.Manifest, s, srv.URL
}

var fromSwarmRE = regexp.MustCompile(`(\d+) bytes from the swarm`)

// saidFromSwarm is the byte count of the console's last "N bytes from the
// swarm".
func saidFromSwarm(t *testing.T, console string) int64 {
	t.Helper()
	all := fromSwarmRE.FindAllStringSubmatch(console, -1)
	if len(all) == 0 {
		t.Fatalf("the console does not say what came from the swarm:\n%s", console)
	}
	n, _ := strconv.ParseInt(all[len(all)-1][1], 10, 64)
	return n
}

// An install with imprint.swarm=1 takes the root's chunks from the swarm
// (here the server's web seed), checked, and the disk verifies; without
// the flag the swarm is not touched.
func TestInstallWithSwarmTakesTheRootFromTheSwarm(t *testing.T) {
	m, _, url := swarmImage(t)
	rp, err := m.RootPartition()
	if err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("swarm=%v", on), func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "disk.img")
			if err := os.WriteFile(target, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(target, 1<<30); err != nil {
				t.Fatal(err)
			}
			var console bytes.Buffer
			a := &Agent{Console: &console, Root: dir, SwarmListen: "127.0.0.2:0",
				Params: Params{Image: "n:1", Sources: []string{url}, Install: target, Swarm: on}}
			srcs, err := a.sources()
			if err != nil {
				t.Fatal(err)
			}
			r, err := a.resolve(context.Background(), srcs)
			if err != nil {
				t.Fatal(err)
			}
			out, err := a.deployTo(context.Background(), srcs, r, target)
			if err != nil {
				t.Fatalf("%v\n%s", err, console.String())
			}
			if !out.Verified {
				t.Fatalf("the install did not verify:\n%s", console.String())
			}
			want := int64(0)
			if on {
				want = rp.Content.DataBytes(m.ChunkSize)
				if got := saidFromSwarm(t, console.String()); got != want {
					t.Errorf("the console says %d bytes from the swarm, want %d", got, want)
				}
			}
			if out.FromSwarm != want {
				t.Errorf("%d bytes from the swarm, want %d (every non-zero chunk)\n%s", out.FromSwarm, want, console.String())
			}
		})
	}
}

// A RAM root with imprint.swarm=1 comes from the swarm, is proved, and is
// then seeded by the seeder process: a second node, with the server's web
// seed and chunks turned off, gets the whole root from it alone.
func TestRAMRootIsSeededFromRAMAfterItBoots(t *testing.T) {
	m, srv, url := swarmImage(t)
	rp, err := m.RootPartition()
	if err != nil {
		t.Fatal(err)
	}
	want := rp.Content.DataBytes(m.ChunkSize)
	dir := t.TempDir()
	var c1 bytes.Buffer
	first := &Agent{Console: &c1, SwarmListen: "127.0.0.3:0", Params: Params{Sources: []string{url}, Swarm: true, RootMode: RootRAM}}
	srcs, err := first.sources()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	img1 := filepath.Join(dir, "root1.img")
	sw := first.swarmOptions()
	if sw == nil {
		t.Fatalf("no swarm with imprint.swarm=1:\n%s", c1.String())
	}
	if err := first.fetchRAMRoot(ctx, srcs, m, rp, img1, sw); err != nil {
		t.Fatalf("%v\n%s", err, c1.String())
	}
	sw.Node.Close()
	if got := saidFromSwarm(t, c1.String()); got != want {
		t.Errorf("first node: %d bytes from the swarm, want %d\n%s", got, want, c1.String())
	}

	first.SwarmListen = "127.0.0.4:0"
	pid, err := first.startSeeder(ctx, m, rp.Name, img1, url)
	if err != nil {
		t.Fatalf("seeder: %v\n%s", err, c1.String())
	}
	t.Cleanup(func() {
		// It leaves the swarm on SIGTERM, as at the node's shutdown.
		_ = syscall.Kill(pid, syscall.SIGTERM)
		if p, err := os.FindProcess(pid); err == nil {
			st, err := p.Wait()
			if err != nil || !st.Success() {
				t.Errorf("the seeder did not end cleanly on SIGTERM: %v %v", st, err)
			}
		}
	})
	srv.off.Store(true)

	var c2 bytes.Buffer
	second := &Agent{Console: &c2, SwarmListen: "127.0.0.5:0", Params: Params{Sources: []string{url}, Swarm: true, RootMode: RootRAM}}
	sw2 := second.swarmOptions()
	if sw2 == nil {
		t.Fatalf("no swarm:\n%s", c2.String())
	}
	defer sw2.Node.Close()
	sw2.Stall = 20 * time.Second
	if err := second.fetchRAMRoot(ctx, srcs, m, rp, filepath.Join(dir, "root2.img"), sw2); err != nil {
		t.Fatalf("second node, from the seeder alone: %v\n%s", err, c2.String())
	}
	if got := saidFromSwarm(t, c2.String()); got != want {
		t.Errorf("second node: %d bytes from the swarm, want %d\n%s", got, want, c2.String())
	}
}

// A seeder handed a file that is not the partition refuses to start, and
// the agent hears why.
func TestSeederRefusesAFileOfTheWrongSize(t *testing.T) {
	m, _, url := swarmImage(t)
	rp, _ := m.RootPartition()
	f := filepath.Join(t.TempDir(), "short.img")
	if err := os.WriteFile(f, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	var console bytes.Buffer
	a := &Agent{Console: &console, SwarmListen: "127.0.0.6:0"}
	_, err := a.startSeeder(context.Background(), m, rp.Name, f, url)
	if err == nil || !strings.Contains(err.Error(), "is 5 bytes, not partition root's") {
		t.Fatalf("seeding a 5-byte file: %v", err)
	}
}

// The swarm listens on the address the route to the imprint server
// leaves from, port SwarmPort, and takes peers from that interface's
// network only: on loopback, 127.0.0.1 and 127.0.0.0/8.
func TestTheSwarmListensWhereTheServerIsRouted(t *testing.T) {
	a := &Agent{Console: io.Discard}
	listen, nets, err := a.swarmPlace("http://127.0.0.1:8080/")
	if err != nil {
		t.Fatal(err)
	}
	if want := "127.0.0.1:6881"; listen != want {
		t.Errorf("listens on %s, want %s (not every interface)", listen, want)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}; !slices.Equal(nets, want) {
		t.Errorf("takes peers from %v, want %v", nets, want)
	}
	if _, _, err := a.swarmPlace("http://[::ffff:zz]/"); err == nil {
		t.Error("a server host that does not resolve gave a place")
	}
}
