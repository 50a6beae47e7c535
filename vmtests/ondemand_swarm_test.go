//go:build vmtest

package vmtests

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

var swarmLineRe = regexp.MustCompile(`IMPRINT-NBD: swarm: (\d+) bytes from peers \((\d+) chunks\), (\d+) from the sources; seeding (\d+) bytes`)

// A diskless on-demand root with imprint.swarm=1 (kernel booted directly,
// QEMU user networking, the server on the host as tracker): the root
// server joins the image's swarm from inside the initramfs, and with no
// peer there every chunk a read misses comes from the sources without a
// hang; the node seeds what it read (all of it held, from the sources).
func TestDisklessOnDemandRootInTheSwarm(t *testing.T) {
	requireQEMU(t)
	im := buildNetImage(t)
	tr := &swarm.Tracker{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.2.0/24")}, Interval: time.Second}
	port := serveHTTP(t, &netboot.HTTP{Store: im.store, Decider: netboot.Static{}, SwarmTracker: tr})
	url := "http://10.0.2.2:" + strconv.Itoa(port) + "/"
	begin := time.Now()
	vm := startVM(t, qemu.Config{
		Kernel: im.fx.Kernel, Initrd: im.agent, MemoryMiB: 512,
		Append: "console=ttyS0 panic=1 imprint.source=" + url + " imprint.image=fixture imprint.root=ondemand imprint.swarm=1",
		NICs:   []qemu.NIC{{Netdev: "user"}},
		Args:   []string{"-device", "virtio-rng-pci"},
	})
	err := vm.Expect(t.Context(),
		qemu.Marker{Text: "IMPRINT-AGENT: starting", Timeout: nextMarkerTimeout},
		qemu.Marker{Text: "IMPRINT-NBD: swarm: in the image's swarm (tracker " + url, Timeout: 3 * nextMarkerTimeout},
		qemu.Marker{Text: "IMPRINT-AGENT: root on demand: partition root", Timeout: nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootSHA256Marker + im.fx.FileSHA256, Timeout: nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout},
	)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	if err := vm.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	console := vm.Console()
	t.Logf("root OK after %v:\n%s", took.Round(time.Second), grepLines(console, "IMPRINT-"))
	if !strings.Contains(console, "read from the image's swarm") {
		t.Errorf("the agent does not say the root reads through the swarm:\n%s", grepLines(console, "IMPRINT-AGENT"))
	}
	all := swarmLineRe.FindAllStringSubmatch(console, -1)
	if len(all) == 0 {
		t.Fatal("the root server never said what it took from the swarm and the sources")
	}
	last := all[len(all)-1]
	fromSources, _ := strconv.ParseInt(last[3], 10, 64)
	held, _ := strconv.ParseInt(last[4], 10, 64)
	if fromSources <= 0 || held != fromSources {
		t.Errorf("with no peer, every chunk read comes from the sources and is seeded: %s", last[0])
	}
}
