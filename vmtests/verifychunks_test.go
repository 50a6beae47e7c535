//go:build vmtest

package vmtests

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// The local entry with imprint.verify=chunks boots a deployed disk whose
// root partition drifted in the chunk holding the fixture's test file:
// the root is served through /dev/nbd0 by the on-demand root server
// reading the partition, the drifted chunk is refused as it is read and
// fetched from imprint.source=, and the root's init sees the file as
// built.
func TestLocalVerifyChunksRepairsADriftedChunkFromTheSource(t *testing.T) {
	requireQEMU(t)
	im := buildNetImage(t)
	port := serveHTTP(t, &netboot.HTTP{Store: im.store, Decider: netboot.Static{}})
	disk := filepath.Join(t.TempDir(), "disk.img")
	imprint(t, "deploy", "--from", im.store, "--image", "fixture", "--disk", disk, "--size", "1G", "--yes")
	root := partitionNamed(t, disk, "root")

	// Flip a byte of the test file where it lies in the root partition.
	file, err := os.ReadFile(filepath.Join(im.fx.RootfsDir, fixture.TestFile))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	part := make([]byte, root.Len)
	if _, err := f.ReadAt(part, root.Start); err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(part, file[:4096])
	if at < 0 {
		t.Fatal("the test file's first block is not in the root partition")
	}
	if _, err := f.WriteAt([]byte{part[at+100] ^ 0xff}, root.Start+int64(at)+100); err != nil {
		t.Fatal(err)
	}
	f.Close()

	cmdline := "console=ttyS0 panic=1 ro root=PARTUUID=" + strings.ToLower(root.GUID) +
		" imprint.mode=local imprint.verify=chunks imprint.source=http://10.0.2.2:" + strconv.Itoa(port) + "/"
	vm := startVM(t, qemu.Config{
		Kernel: im.fx.Kernel, Initrd: im.agent, MemoryMiB: 512, Append: cmdline,
		Disks: []qemu.Disk{{Path: disk}},
		NICs:  []qemu.NIC{{Netdev: "user"}},
		Args:  []string{"-device", "virtio-rng-pci"},
	})
	if err := vm.Expect(t.Context(),
		qemu.Marker{Text: "IMPRINT-AGENT: verify chunks: ", Timeout: 3 * nextMarkerTimeout},
		qemu.Marker{Text: "IMPRINT-AGENT: root on demand: partition root", Timeout: nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootSHA256Marker + im.fx.FileSHA256, Timeout: nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout},
	); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	console := vm.Console()
	for _, want := range []string{
		"checked chunk by chunk (/dev/nbd0) mounted read-only",
		"on the local partition it hashes to",
		"fetching it from the sources",
		"(1 drifted)",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("the console lacks %q:\n%s", want, grepLines(console, "IMPRINT-"))
		}
	}
	t.Logf("local root checked chunk by chunk:\n%s", grepLines(console, "IMPRINT-"))
}
