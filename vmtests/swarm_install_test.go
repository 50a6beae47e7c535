//go:build vmtest

package vmtests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// A netboot install with imprint.swarm=1: the agent takes the root's
// chunks from the image's swarm (the server as tracker and web seed),
// checked, then boots the installed disk; the server's fleet status names
// the machine by its DHCP reservation.
func TestNetbootInstallThroughTheSwarm(t *testing.T) {
	requireQEMU(t)
	im := buildNetImage(t)
	n := newNetns(t, "10.72.0.1/24")
	const mac = "52:54:00:72:00:01"
	serveIn(t, n, im.bin, "--store", im.store, "--image", "fixture", "--mode", "install", "--install-disk", "/dev/vda",
		"--cmdline", "imprint.swarm=1", "--reserve", mac+"=10.72.0.20,rack1-n01.site.example",
		"--dhcp", "full", "--interface", n.tap, "--pool", "10.72.0.100-10.72.0.150", "--http", "10.72.0.1:8080")
	disk := filepath.Join(t.TempDir(), "blank.img")
	f, _ := os.Create(disk)
	f.Truncate(1 << 30)
	f.Close()
	begin := time.Now()
	vm := startVM(t, qemu.Config{
		Binary:   n.qemuBinary(t),
		Firmware: qemu.UEFI,
		Reboot:   true,
		Disks:    []qemu.Disk{{Path: disk}},
		Args: []string{"-netdev", "tap,id=pxe0,ifname=" + n.tap + ",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=pxe0,mac=" + mac, "-device", "virtio-rng-pci"},
	})
	err := vm.Expect(t.Context(),
		qemu.Marker{Text: "IMPRINT-AGENT: swarm: tracker and web seed http://10.72.0.1:8080", Timeout: firmwareBoot + 2*time.Minute},
		qemu.Marker{Text: "IMPRINT-AGENT: installed fixture:", Timeout: 4 * nextMarkerTimeout},
		qemu.Marker{Text: agentLocalRootMarker, Timeout: firmwareBoot},
		qemu.Marker{Text: fixture.RootSHA256Marker + im.fx.FileSHA256, Timeout: nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout},
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("install and boot: %v", time.Since(begin).Round(time.Second))
	t.Logf("%s", grepLines(vm.Console(), "IMPRINT-AGENT: deploy: "))
	m := regexp.MustCompile(`deploy: (\d+) bytes from the swarm, (\d+) from the sources`).FindStringSubmatch(vm.Console())
	if m == nil {
		t.Fatal("the agent does not say what came from the swarm")
	}
	if got, _ := strconv.ParseInt(m[1], 10, 64); got == 0 {
		t.Errorf("nothing came from the swarm: %s", m[0])
	}
	out, err := n.cmd(im.bin, "status", "--server", "http://10.72.0.1:8080/", "--json").Output()
	if err != nil {
		t.Fatalf("imprint status: %v", err)
	}
	var st netboot.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("imprint status --json: %v\n%s", err, out)
	}
	found := false
	for _, c := range st.Clients {
		if c.Addr == "10.72.0.20" {
			found = c.MAC == mac && c.Node == "rack1-n01"
			t.Logf("fleet: %s %s %s %s:%s %s", c.Addr, c.MAC, c.Node, c.Image, c.Version, c.State)
		}
	}
	if !found {
		t.Errorf("the fleet status does not name 10.72.0.20 as %s rack1-n01:\n%s", mac, out)
	}
	if err := vm.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	imprint(t, "verify", "--disk", disk)
}
