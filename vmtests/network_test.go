//go:build vmtest

package vmtests

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/netboot"
	imstore "github.com/imprint-dev/imprint/store"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// netImage is the fixture built into a store together with imprint's agent
// initramfs for the fixture's kernel.
type netImage struct {
	fx      *fixture.Fixture
	store   string
	rootSHA string
	bin     string // static imprint binary
	agent   string // the agent initramfs
	rootLen int64  // the root partition's size
}

func buildNetImage(t *testing.T, buildArgs ...string) netImage {
	t.Helper()
	return buildNetImageWith(t, nil, buildArgs...)
}

// buildNetImageWith is buildNetImage with prepare run on the fixture's
// root tree before the build (nil: the tree as it is).
func buildNetImageWith(t *testing.T, prepare func(rootfs string) error, buildArgs ...string) netImage {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "imprint")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/imprint")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fx := buildFixture(t)
	if prepare != nil {
		if err := prepare(fx.RootfsDir); err != nil {
			t.Fatal(err)
		}
	}
	agentImg := filepath.Join(dir, "agent.img")
	imprint(t, "initrd", "--modules", fx.Modules, "--imprint", bin, "--out", agentImg)
	store := filepath.Join(dir, "store")
	imprint(t, append([]string{"build", "--store", store, "--name", "fixture", "--rootfs", fx.RootfsDir, "--cmdline", "console=ttyS0 ro panic=1", "--agent", agentImg}, buildArgs...)...)
	st, err := imstore.OpenDir(store)
	if err != nil {
		t.Fatal(err)
	}
	r, err := imstore.Resolve(t.Context(), st, "fixture", "")
	if err != nil {
		t.Fatal(err)
	}
	var rootSHA string
	var rootLen int64
	for _, p := range r.Manifest.Partitions {
		if p.Name == "root" {
			rootSHA, rootLen = p.Content.SHA256, p.Content.Size
		}
	}
	return netImage{fx: fx, store: store, rootSHA: rootSHA, bin: bin, agent: agentImg, rootLen: rootLen}
}

// serveHTTP runs imprint's HTTP server on the host's loopback for the test.
func serveHTTP(t *testing.T, h *netboot.HTTP) (port int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.Logf = t.Logf
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return hashRange(t, p, 0, st.Size())
}

// Network test 1 (laptop diskless): a deployed disk boots its diskless
// entry; the agent fetches the root from imprint's HTTP server on the host
// (QEMU user networking reaches it at 10.0.2.2), proves it and runs it;
// the local disk is not written.
func TestLaptopDisklessEntry(t *testing.T) {
	requireQEMU(t)
	im := buildNetImage(t)
	h := &netboot.HTTP{Store: im.store, Decider: netboot.Static{}}
	port := serveHTTP(t, h)
	url := "http://10.0.2.2:" + strconv.Itoa(port) + "/"
	disk := filepath.Join(t.TempDir(), "laptop.img")
	imprint(t, "deploy", "--from", im.store, "--image", "fixture", "--disk", disk, "--size", "1G", "--yes",
		"--boot-timeout", "0", "--firmware", "uefi", "--diskless-url", url)
	imprint(t, "boot", "default", "diskless", "--disk", disk)
	before := fileSHA(t, disk)

	begin := time.Now()
	vm := startVM(t, qemu.Config{
		Firmware:  qemu.UEFI,
		MemoryMiB: 1024,
		Disks:     []qemu.Disk{{Path: disk}},
		NICs:      []qemu.NIC{{Netdev: "user"}},
		Args:      []string{"-boot", "order=c", "-device", "virtio-rng-pci"},
	})
	err := vm.Expect(t.Context(),
		qemu.Marker{Text: "IMPRINT-AGENT: starting", Timeout: firmwareBoot},
		qemu.Marker{Text: "IMPRINT-AGENT: network:", Timeout: nextMarkerTimeout},
		// The diskless entry reads its root on demand (the default).
		qemu.Marker{Text: "IMPRINT-AGENT: root on demand: partition root", Timeout: 3 * nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootSHA256Marker + im.fx.FileSHA256, Timeout: nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout},
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("diskless boot in %v:\n%s", time.Since(begin).Round(time.Second), grepLines(vm.Console(), "IMPRINT-"))
	if m := grepLines(vm.Console(), "IMPRINT-TEST root: mount="); !strings.Contains(m, "overlay") {
		t.Errorf("the root is not the RAM overlay: %q", m)
	}
	if after := fileSHA(t, disk); after != before {
		t.Fatal("the laptop's disk changed during a diskless boot")
	}
}
