//go:build vmtest

package vmtests

import (
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

var (
	fetchedRe = regexp.MustCompile(`IMPRINT-NBD: fetched (\d+) bytes in (\d+) chunks`)
	memRe     = regexp.MustCompile(`IMPRINT-TEST root: MemAvailable:\s+(\d+) kB`)
	piecesRe  = regexp.MustCompile(`IMPRINT-NBD: pieces: (\d+) bytes in (\d+) signed pieces from the web seed, (\d+) range requests \((\d+) pieces refused`)
)

// The fixture boots diskless with the agent as its initramfs (kernel
// booted directly, QEMU user networking reaching imprint's HTTP server on
// the host at 10.0.2.2), once with the root read on demand from
// /dev/nbd0 and once fetched whole into RAM. On demand, the root must be
// the NBD device, its file must hash right, and the server must have
// fetched less than the root's size, in signed pieces from the server's
// web seed (the swarm routes are on, as they are by default); both runs
// log boot time and the guest's MemAvailable for docs/performance.md.
func TestDisklessOnDemandRoot(t *testing.T) {
	requireQEMU(t)
	im := buildNetImage(t)
	port := serveHTTP(t, &netboot.HTTP{Store: im.store, Decider: netboot.Static{}, SwarmTracker: &swarm.Tracker{}})
	url := "http://10.0.2.2:" + strconv.Itoa(port) + "/"
	for _, mode := range []string{"ondemand", "ram"} {
		t.Run(mode, func(t *testing.T) {
			begin := time.Now()
			vm := startVM(t, qemu.Config{
				Kernel: im.fx.Kernel, Initrd: im.agent, MemoryMiB: 512,
				Append: "console=ttyS0 panic=1 imprint.source=" + url + " imprint.image=fixture imprint.root=" + mode,
				NICs:   []qemu.NIC{{Netdev: "user"}},
				Args:   []string{"-device", "virtio-rng-pci"},
			})
			root := qemu.Marker{Text: "IMPRINT-AGENT: root on demand: partition root", Timeout: 3 * nextMarkerTimeout}
			if mode == "ram" {
				root.Text = "IMPRINT-AGENT: root sha256=" + im.rootSHA + " matches the image"
			}
			err := vm.Expect(t.Context(),
				qemu.Marker{Text: "IMPRINT-AGENT: starting", Timeout: nextMarkerTimeout},
				root,
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
			mem := memRe.FindStringSubmatch(console)
			t.Logf("%s: root OK after %v, MemAvailable %v kB (root %d bytes):\n%s", mode, took.Round(time.Second), mem,
				im.rootLen, grepLines(console, "IMPRINT-"))
			if mode == "ram" {
				return
			}
			if !strings.Contains(console, "is /dev/nbd0, served by pid") || !strings.Contains(console, "root from the network on demand (/dev/nbd0) mounted read-only") {
				t.Errorf("the root was not mounted from /dev/nbd0:\n%s", grepLines(console, "IMPRINT-AGENT"))
			}
			if strings.Contains(console, "IMPRINT-AGENT: root sha256=") {
				t.Error("an on-demand boot fetched the whole root into RAM")
			}
			all := fetchedRe.FindAllStringSubmatch(console, -1)
			if len(all) == 0 {
				t.Fatal("the root server never said what it fetched")
			}
			n, _ := strconv.ParseInt(all[len(all)-1][1], 10, 64)
			if n <= 0 || n >= im.rootLen {
				t.Errorf("the boot fetched %d bytes of a %d-byte root; want some, and less than all", n, im.rootLen)
			}
			t.Logf("on demand: fetched %d of %d bytes (%.1f%%)", n, im.rootLen, float64(n)*100/float64(im.rootLen))
			ps := piecesRe.FindAllStringSubmatch(console, -1)
			if len(ps) == 0 {
				t.Fatalf("the root server read no signed pieces from the web seed:\n%s", grepLines(console, "IMPRINT-"))
			}
			last := ps[len(ps)-1]
			if pieces, _ := strconv.Atoi(last[2]); pieces == 0 || last[4] != "0" {
				t.Errorf("pieces: %s bytes in %s pieces, %s refused; want some, none refused", last[1], last[2], last[4])
			}
			if c, _ := strconv.Atoi(all[len(all)-1][2]); c != 0 {
				t.Errorf("%d whole chunks fetched beside the pieces; want none from a server with the web seed", c)
			}
		})
	}
}
