//go:build vmtest

package vmtests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/internal/testenv"
)

// Field team: a disk deployed at the master site is carried to a new site
// and plugged into a Linux machine there (here: attached as a loop device
// on the host). `imprint serve --disk` on it is the whole site server:
// DHCP, TFTP, iPXE and the image, checked chunk by chunk from the disk's
// partitions. A diskless client in the site's network (a namespace) boots
// the image from RAM and reports the root's hash; the image is signed and
// the agent checks the signature (serve --trust passes the key on). The
// master store is gone by then: the carried disk is the only source.
func TestFieldTeamServesACarriedDisk(t *testing.T) {
	requireQEMU(t)
	keyDir := t.TempDir()
	imprint(t, "key", "generate", "--out", filepath.Join(keyDir, "master"))
	im := buildNetImage(t, "--sign", filepath.Join(keyDir, "master.key"))

	carried := filepath.Join(t.TempDir(), "carried.img")
	imprint(t, "deploy", "--from", im.store, "--image", "fixture", "--disk", carried, "--size", "1G", "--yes",
		"--trust", filepath.Join(keyDir, "master.pub"))
	if err := os.RemoveAll(im.store); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", "-r", carried).Output()
	if err != nil {
		testenv.Skipf(t, "losetup: %v (loop devices are needed to attach the carried disk)", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	before := fileSHA(t, carried)

	n := newNetns(t, "10.68.0.1/24")
	log := serveIn(t, n, im.bin, "--disk", loop, "--mode", "diskless", "--trust", filepath.Join(keyDir, "master.pub"),
		"--dhcp", "full", "--interface", n.tap, "--pool", "10.68.0.100-10.68.0.150", "--http", "10.68.0.1:8080")
	begin := time.Now()
	vm := pxeVM(t, n, qemu.UEFI, "52:54:00:68:00:01", true)
	markers := disklessMarkers(im)
	markers = append(markers[:2:2], append([]qemu.Marker{{Text: "(signature verified)", Timeout: nextMarkerTimeout}}, markers[2:]...)...)
	if err := vm.Expect(t.Context(), markers...); err != nil {
		t.Fatal(err)
	}
	t.Logf("netboot from the carried disk in %v:\n%s", time.Since(begin).Round(time.Second), grepLines(vm.Console(), "IMPRINT-AGENT: "))
	for _, want := range []string{"serving fixture:", "from " + loop, "dhcp: ACK 52:54:00:68:00:01", "/boot/fixture/"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the server log lacks %q:\n%s", want, log.String())
		}
	}
	if strings.Contains(log.String(), "REFUSED") {
		t.Errorf("the carried disk refused chunks:\n%s", log.String())
	}
	if after := fileSHA(t, carried); after != before {
		t.Fatal("serving changed the carried disk")
	}
}
