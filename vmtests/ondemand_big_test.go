//go:build vmtest

package vmtests

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// A root bigger than the node's RAM boots on demand: the fixture's root
// plus 2 GiB of random files nothing reads, diskless in a 1 GiB VM. The
// root must be served from /dev/nbd0, its test file must hash right, and
// the boot must fetch a small share of the root (the chunks read, not the
// filler). In RAM mode this root cannot fit; bench/diskless/run.sh shows
// what happens then.
func TestDisklessOnDemandRootLargerThanRAM(t *testing.T) {
	requireQEMU(t)
	im := buildNetImageWith(t, func(rootfs string) error {
		return writeFiller(filepath.Join(rootfs, "filler"), fillerBytes, 2)
	})
	if im.rootLen < fillerBytes {
		t.Fatalf("the root partition is %d bytes, want at least the %d bytes of filler", im.rootLen, fillerBytes)
	}
	port := serveHTTP(t, &netboot.HTTP{Store: im.store, Decider: netboot.Static{}})
	url := "http://10.0.2.2:" + strconv.Itoa(port) + "/"
	vm := startVM(t, qemu.Config{
		Kernel: im.fx.Kernel, Initrd: im.agent, MemoryMiB: 1024,
		Append: "console=ttyS0 panic=1 imprint.source=" + url + " imprint.image=fixture imprint.root=ondemand",
		NICs:   []qemu.NIC{{Netdev: "user"}},
		Args:   []string{"-device", "virtio-rng-pci"},
	})
	if err := vm.Expect(t.Context(),
		qemu.Marker{Text: "IMPRINT-AGENT: starting", Timeout: nextMarkerTimeout},
		qemu.Marker{Text: "IMPRINT-AGENT: root on demand: partition root", Timeout: 3 * nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootSHA256Marker + im.fx.FileSHA256, Timeout: nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout},
	); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	console := vm.Console()
	if !strings.Contains(console, "root from the network on demand (/dev/nbd0) mounted read-only") {
		t.Errorf("the root was not mounted from /dev/nbd0:\n%s", grepLines(console, "IMPRINT-AGENT"))
	}
	all := fetchedRe.FindAllStringSubmatch(console, -1)
	if len(all) == 0 {
		t.Fatal("the root server never said what it fetched")
	}
	n, _ := strconv.ParseInt(all[len(all)-1][1], 10, 64)
	// The fixture's own files are a few MiB; a boot that fetched a tenth
	// of this root read filler, or fetched far more than it read.
	if n <= 0 || n > im.rootLen/10 {
		t.Errorf("the boot fetched %d bytes of a %d-byte root; want some, and under a tenth", n, im.rootLen)
	}
	t.Logf("%d-byte root in 1 GiB of RAM: fetched %d bytes (%.2f%%); %s", im.rootLen, n, float64(n)*100/float64(im.rootLen),
		grepLines(console, "IMPRINT-TEST root: MemAvailable"))
}
