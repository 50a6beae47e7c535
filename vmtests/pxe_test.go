//go:build vmtest

package vmtests

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// netns is a network namespace with a tap device for QEMU, made by the
// test and removed after it: all traffic stays inside.
type netns struct {
	name string
	tap  string
}

func newNetns(t *testing.T, addr string) *netns {
	t.Helper()
	testenv.NeedNetNS(t)
	var b [4]byte
	rand.Read(b[:])
	n := &netns{name: "imprint-vm-" + hex.EncodeToString(b[:]), tap: "tap0"}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		testenv.Skipf(t, "cannot create a network namespace here (%v: %s)", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() })
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"tuntap", "add", "dev", n.tap, "mode", "tap"},
		{"addr", "add", addr, "dev", n.tap},
		{"link", "set", n.tap, "up"},
	} {
		if out, err := n.cmd("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return n
}

func (n *netns) cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// qemuBinary is a wrapper that starts QEMU inside the namespace, where the
// tap device is.
func (n *netns) qemuBinary(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "qemu-in-netns")
	os.WriteFile(p, []byte("#!/bin/sh\nexec ip netns exec "+n.name+" qemu-system-x86_64 \"$@\"\n"), 0o755)
	return p
}

// logWriter collects a child's output for the test log.
type logWriter struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// serveIn runs `imprint serve` inside the namespace until the test ends,
// and waits until it says it listens.
func serveIn(t *testing.T, n *netns, bin string, args ...string) *logWriter {
	t.Helper()
	cmd := n.cmd(bin, append([]string{"serve"}, args...)...)
	log := &logWriter{}
	pr, pw, _ := os.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			fmt.Fprintln(log, sc.Text())
			if !once && strings.Contains(sc.Text(), "imprint serve: HTTP on") {
				once = true
				close(ready)
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("imprint serve:\n%s", log.String())
		}
	})
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("imprint serve did not start:\n%s", log.String())
	}
	return log
}

func disklessMarkers(im netImage) []qemu.Marker {
	return []qemu.Marker{
		{Text: "IMPRINT-AGENT: starting", Timeout: firmwareBoot + 2*time.Minute},
		{Text: "IMPRINT-AGENT: network:", Timeout: nextMarkerTimeout},
		// A netbooted diskless node reads its root on demand (the default).
		{Text: "IMPRINT-AGENT: root on demand: partition root", Timeout: 3 * nextMarkerTimeout},
		{Text: fixture.RootSHA256Marker + im.fx.FileSHA256, Timeout: nextMarkerTimeout},
		{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout},
	}
}

// pxeVM boots a diskless UEFI machine on the namespace's tap. With rom,
// the NIC carries QEMU's iPXE option ROM (which asks DHCP as iPXE at
// once); without, OVMF's own PXE client boots iPXE from TFTP first.
func pxeVM(t *testing.T, n *netns, fw qemu.Firmware, mac string, rom bool) *qemu.VM {
	nic := "virtio-net-pci,netdev=pxe0,mac=" + mac
	if !rom {
		nic += ",romfile="
	}
	return startVM(t, qemu.Config{
		Binary:   n.qemuBinary(t),
		Firmware: fw,
		Args: []string{"-netdev", "tap,id=pxe0,ifname=" + n.tap + ",script=no,downscript=no", "-device", nic,
			"-device", "virtio-rng-pci"},
	})
}

// Network test 2: a diskless UEFI machine PXE-boots in a namespace where
// imprint serve is the only DHCP server: a lease, iPXE (from the NIC's ROM,
// or by TFTP for OVMF's native PXE), kernel and agent by HTTP, then the
// image from RAM.
func TestUEFIPXEFullDHCP(t *testing.T) {
	requireQEMU(t)
	im := buildNetImage(t)
	for _, tc := range []struct {
		name string
		rom  bool
		mac  string
		want []string
	}{
		{"native-pxe-tftp", false, "52:54:00:66:00:02", []string{"tftp: ", "ipxe.efi", "/boot.ipxe?mac=", "/boot/fixture/"}},
		{"ipxe-rom", true, "52:54:00:66:00:01", []string{"/boot.ipxe?mac=", "/boot/fixture/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNetns(t, "10.66.0.1/24")
			log := serveIn(t, n, im.bin, "--store", im.store, "--image", "fixture", "--mode", "diskless",
				"--dhcp", "full", "--interface", n.tap, "--pool", "10.66.0.100-10.66.0.150", "--http", "10.66.0.1:8080")
			begin := time.Now()
			vm := pxeVM(t, n, qemu.UEFI, tc.mac, tc.rom)
			if err := vm.Expect(t.Context(), disklessMarkers(im)...); err != nil {
				t.Fatal(err)
			}
			t.Logf("UEFI netboot to the image in %v:\n%s", time.Since(begin).Round(time.Second), grepLines(vm.Console(), "IMPRINT-AGENT: root"))
			for _, want := range append(tc.want, "dhcp: ACK "+tc.mac) {
				if !strings.Contains(log.String(), want) {
					t.Errorf("the server log lacks %q:\n%s", want, log.String())
				}
			}
		})
	}
}

// Network test 3: proxyDHCP. dnsmasq is the site's plain DHCP server (no
// boot options); imprint serve --dhcp proxy adds only the boot options.
func TestUEFIPXEProxyDHCP(t *testing.T) {
	requireQEMU(t)
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq is missing: make deps installs it")
	}
	im := buildNetImage(t)
	n := newNetns(t, "10.67.0.1/24")
	if out, err := n.cmd("ip", "addr", "add", "10.67.0.2/24", "dev", n.tap).CombinedOutput(); err != nil {
		t.Fatalf("second address: %v %s", err, out)
	}
	dir := t.TempDir()
	site := n.cmd("dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--bind-interfaces", "--interface="+n.tap,
		"--listen-address=10.67.0.1", "--dhcp-range=10.67.0.50,10.67.0.90,12h", "--dhcp-leasefile="+filepath.Join(dir, "leases"),
		"--pid-file="+filepath.Join(dir, "pid"), "--user=root", "--no-ping", "--log-dhcp")
	siteLog := &logWriter{}
	site.Stdout, site.Stderr = siteLog, siteLog
	if err := site.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		site.Process.Kill()
		site.Wait()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", siteLog.String())
		}
	})
	log := serveIn(t, n, im.bin, "--store", im.store, "--image", "fixture", "--mode", "diskless",
		"--dhcp", "proxy", "--interface", n.tap, "--server-ip", "10.67.0.2", "--http", "10.67.0.2:8080")
	vm := pxeVM(t, n, qemu.UEFI, "52:54:00:67:00:01", false)
	if err := vm.Expect(t.Context(), disklessMarkers(im)...); err != nil {
		t.Fatal(err)
	}
	if c := grepLines(vm.Console(), "IMPRINT-AGENT: network:"); !strings.Contains(c, "10.67.0.") {
		t.Errorf("the agent's address did not come from the site's server: %q", c)
	}
	if !strings.Contains(siteLog.String(), "DHCPACK") {
		t.Errorf("dnsmasq handed out no lease:\n%s", siteLog.String())
	}
	if !strings.Contains(log.String(), "tftp: ") || strings.Contains(log.String(), "dhcp: ACK 52:54:00:67:00:01 -> 10.67") {
		t.Errorf("proxy server log:\n%s", log.String())
	}
}

// Network test 5: netboot install. A machine with a blank disk netboots,
// the agent deploys the image onto its disk with imprint deploy's code and
// reboots into the local entry; imprint verify on the disk file agrees.
func TestNetbootInstall(t *testing.T) {
	requireQEMU(t)
	im := buildNetImage(t)
	n := newNetns(t, "10.68.0.1/24")
	log := serveIn(t, n, im.bin, "--store", im.store, "--image", "fixture", "--mode", "install", "--install-disk", "/dev/vda",
		"--dhcp", "full", "--interface", n.tap, "--pool", "10.68.0.100-10.68.0.150", "--http", "10.68.0.1:8080")
	disk := filepath.Join(t.TempDir(), "blank.img")
	f, _ := os.Create(disk)
	f.Truncate(1 << 30)
	f.Close()
	vm := startVM(t, qemu.Config{
		Binary:   n.qemuBinary(t),
		Firmware: qemu.UEFI,
		Reboot:   true,
		Disks:    []qemu.Disk{{Path: disk}},
		Args: []string{"-netdev", "tap,id=pxe0,ifname=" + n.tap + ",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=pxe0,mac=52:54:00:68:00:01", "-device", "virtio-rng-pci"},
	})
	err := vm.Expect(t.Context(),
		qemu.Marker{Text: "IMPRINT-AGENT: installing onto /dev/vda", Timeout: firmwareBoot + 2*time.Minute},
		qemu.Marker{Text: "IMPRINT-AGENT: installed fixture:", Timeout: 4 * nextMarkerTimeout},
		// The installed disk's local entry runs the agent in local mode.
		qemu.Marker{Text: agentLocalRootMarker, Timeout: firmwareBoot},
		qemu.Marker{Text: fixture.RootSHA256Marker + im.fx.FileSHA256, Timeout: nextMarkerTimeout},
		qemu.Marker{Text: fixture.RootOKMarker, Timeout: nextMarkerTimeout},
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", grepLines(vm.Console(), "IMPRINT-AGENT: install"))
	root := partitionNamed(t, disk, "root")
	if !strings.Contains(vm.Console(), agentLocalRootMarker+strings.ToLower(root.GUID)) {
		t.Error("the second boot did not run from the installed root partition")
	}
	imprint(t, "verify", "--disk", disk)
	_ = log
}

// Network test 4: a legacy BIOS machine (SeaBIOS) netboots the image.
// QEMU's NIC option ROMs are iPXE, so the first DHCP request already says
// "iPXE" and gets the script URL; TFTP is proven by the UEFI native PXE
// test (OVMF's own PXE client loads iPXE by TFTP).
func TestBIOSPXE(t *testing.T) {
	requireQEMU(t)
	im := buildNetImage(t)
	n := newNetns(t, "10.69.0.1/24")
	log := serveIn(t, n, im.bin, "--store", im.store, "--image", "fixture", "--mode", "diskless",
		"--dhcp", "full", "--interface", n.tap, "--pool", "10.69.0.100-10.69.0.150", "--http", "10.69.0.1:8080")
	vm := pxeVM(t, n, qemu.BIOS, "52:54:00:69:00:01", true)
	if err := vm.Expect(t.Context(), disklessMarkers(im)...); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "/boot.ipxe?mac=") {
		t.Errorf("server log:\n%s", log.String())
	}
}
