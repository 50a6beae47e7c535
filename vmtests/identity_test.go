//go:build vmtest

package vmtests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/identity"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/internal/testenv"
)

// agentLocalRootMarker is what the agent prints in local mode once it found
// the root partition, followed by its lower-case PARTUUID.
const agentLocalRootMarker = "IMPRINT-AGENT: root PARTUUID="

// identityInit replaces the fixture's /sbin/init: it prints what a node
// got (one "IMPRINT-TEST id: key=value" line each), then writes a file
// under a persistent path and one under a volatile path for the next boot.
const identityInit = `#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
[ -e /proc/cmdline ] || mount -t proc proc /proc
say() { echo "IMPRINT-TEST id: $1=$2"; }
say hostname "$(hostname)/$(cat /etc/hostname)"
say fstab "$(cat /etc/fstab)"
say role "$(cat /etc/role 2>/dev/null || echo none)"
say node-file "$(cat /etc/node-file 2>/dev/null || echo none)"
say machine-id "$(cat /etc/machine-id)"
say persisted "$(cat /var/log/boots 2>/dev/null | tr '\n' ' ')."
say volatile "$(cat /var/tmp/mark 2>/dev/null || echo none)"
say sshkey "$(cat /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null || echo none)"
say shmem-kib "$(sed -n 's/^Shmem: *\([0-9]*\) kB/\1/p' /proc/meminfo)"
say uptime "$(cut -d ' ' -f 1 /proc/uptime)"
say rootmount "$(grep ' / ' /proc/mounts | head -n 1 | cut -d ' ' -f 1,3)"
echo "boot-$(hostname)" >> /var/log/boots
echo here > /var/tmp/mark
sync
echo "IMPRINT-TEST root: ok"
poweroff -f
`

const identityConf = `# one image, two kinds of node
class node[01-64]  compute
class /gpu[0-9]+/  gpu
class gpu07        gpu.a100
file /etc/fstab
persistent /var/log
volatile /var/tmp
`

// Identity test: one disk, booted through its local entry (the image's
// kernel with imprint's agent in local mode) as node01 (class compute),
// as gpu07 (class gpu.a100, falling back to gpu) and as node01 again. Each
// node gets its hostname, fstab variant, class layer and node layer; a file
// under the persistent /var/log survives node01's reboot and is not seen
// by gpu07; a file under the volatile /var/tmp is gone; the root partition
// is bit-for-bit the image afterwards.
func TestLocalIdentityTwoNodesOneDisk(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "imprint")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/imprint")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fx := buildFixture(t)
	root := fx.RootfsDir
	writeIdentityRoot(t, root)
	imprint(t, "identity", "check", "--rootfs", root)
	agentImg := filepath.Join(dir, "agent.img")
	imprint(t, "initrd", "--modules", fx.Modules, "--imprint", bin, "--out", agentImg)
	layoutFile := filepath.Join(dir, "layout")
	// The state partition is created empty: the agent formats it at the
	// first boot, from Go.
	if err := os.WriteFile(layoutFile, []byte("esp esp 100M esp\nroot root-x86-64 auto image\nstate linux-generic 128M local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	imprint(t, "build", "--store", store, "--name", "fixture", "--rootfs", root, "--layout", layoutFile,
		"--cmdline", "console=ttyS0 ro panic=1", "--agent", agentImg)
	disk := filepath.Join(dir, "disk.img")
	// One slot: the test copies the plain local entry for each node.
	imprint(t, "deploy", "--from", store, "--image", "fixture", "--disk", disk, "--yes", "--boot-timeout", "0", "--size", "1G", "--firmware", "uefi", "--slots", "1")
	rootPart := partitionNamed(t, disk, "root")
	before := hashRange(t, disk, rootPart.Start, rootPart.Len)

	var menu bootloader.Menu
	if err := jsonUnmarshal(imprint(t, "boot", "list", "--disk", disk, "--json"), &menu); err != nil {
		t.Fatal(err)
	}
	local, ok := menu.Find("local")
	if !ok || !strings.Contains(local.Options, "imprint.mode=local") || !strings.HasSuffix(local.Initrd[0], "/agent.img") {
		t.Fatalf("the local entry does not run the agent: %+v", local)
	}
	if _, ok := menu.Find(bootloader.LocalOwnInitrd); !ok {
		t.Fatalf("no fallback entry with the image's own initrd: %+v", menu.Entries)
	}

	boots := 0
	boot := func(node string) map[string]string {
		t.Helper()
		boots++
		id := fmt.Sprintf("boot%d-%s", boots, node)
		// The local entry's own kernel, agent and command line, with the
		// node's name added: the menu API, as an admin would.
		imprint(t, "boot", "add", "--disk", disk, "--id", id, "--title", "as "+node, "--kernel", local.Linux,
			"--initrd", local.Initrd[0], "--options", local.Options+" imprint.node="+node, "--default")
		begin := time.Now()
		vm := startVM(t, qemu.Config{Firmware: qemu.UEFI, Disks: []qemu.Disk{{Path: disk}}, Args: []string{"-device", "virtio-rng-pci"}})
		if err := vm.Expect(t.Context(),
			qemu.Marker{Text: "IMPRINT-AGENT: identity: node " + node, Timeout: firmwareBoot},
			qemu.Marker{Text: "IMPRINT-TEST id: rootmount=", Timeout: nextMarkerTimeout},
			qemu.Marker{Text: "IMPRINT-TEST root: ok", Timeout: nextMarkerTimeout}); err != nil {
			t.Fatal(err)
		}
		if err := vm.Wait(t.Context()); err != nil {
			t.Fatalf("the guest should power off cleanly: %v", err)
		}
		console := vm.Console()
		t.Logf("boot as %s in %v:\n%s", node, time.Since(begin).Round(time.Second), grepLines(console, "IMPRINT-"))
		return parseIDLines(console)
	}
	check := func(node string, got map[string]string, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", node, k, got[k], v)
			}
		}
	}
	first := boot("node01")
	check("node01", first, map[string]string{"hostname": "node01/node01", "fstab": "compute-fstab", "role": "compute-layer",
		"node-file": "node01-file", "persisted": ".", "volatile": "none", "rootmount": "overlay overlay"})
	gpu := boot("gpu07")
	check("gpu07", gpu, map[string]string{"hostname": "gpu07/gpu07", "fstab": "gpu-fstab", "role": "gpu-layer",
		"node-file": "gpu07-file", "persisted": ".", "volatile": "none"})
	again := boot("node01")
	check("node01 again", again, map[string]string{"hostname": "node01/node01", "fstab": "compute-fstab",
		"persisted": "boot-node01 .", "volatile": "none"})
	if first["sshkey"] == "none" || first["sshkey"] != again["sshkey"] || first["sshkey"] == gpu["sshkey"] || !strings.HasPrefix(first["sshkey"], "ssh-ed25519 AAAA") || !strings.HasSuffix(first["sshkey"], " root@node01") {
		t.Errorf("ssh host keys: node01 %q then %q, gpu07 %q: want kept per node on state, different between nodes", first["sshkey"], again["sshkey"], gpu["sshkey"])
	}
	if first["machine-id"] == "" || first["machine-id"] != again["machine-id"] || first["machine-id"] == gpu["machine-id"] {
		t.Errorf("machine-ids: node01 %q then %q, gpu07 %q: want stable per node, different between nodes", first["machine-id"], again["machine-id"], gpu["machine-id"])
	}
	if after := hashRange(t, disk, rootPart.Start, rootPart.Len); after != before {
		t.Error("the root partition changed over three boots")
	}
	imprint(t, "verify", "--disk", disk)
}

// writeIdentityRoot makes the fixture's tree the identity tests' image:
// identityInit as /sbin/init, identityConf, fstab variants, class and node
// layers, and an /etc/ssh (as if sshd were installed) for host keys.
func writeIdentityRoot(t *testing.T, root string) {
	t.Helper()
	for p, content := range map[string]string{
		"sbin/init":                 identityInit,
		"etc/imprint/identity.conf": identityConf,
		"etc/fstab":                 "plain-fstab",
		"etc/fstab.compute":         "compute-fstab",
		"etc/fstab.gpu":             "gpu-fstab",
		"etc/imprint/layers/class/compute/etc/role":    "compute-layer",
		"etc/imprint/layers/class/gpu/etc/role":        "gpu-layer",
		"etc/imprint/layers/node/node01/etc/node-file": "node01-file",
		"etc/imprint/layers/node/gpu07/etc/node-file":  "gpu07-file",
		"var/log/.keep": "", "var/tmp/.keep": "", "etc/ssh/sshd_config": "# sshd\n",
	} {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// parseIDLines collects the identityInit's "IMPRINT-TEST id: key=value"
// lines from a console.
func parseIDLines(console string) map[string]string {
	got := map[string]string{}
	for _, l := range strings.Split(console, "\n") {
		if _, kv, ok := strings.Cut(strings.TrimRight(l, "\r"), "IMPRINT-TEST id: "); ok {
			k, v, _ := strings.Cut(kv, "=")
			got[k] = v
		}
	}
	return got
}

// Identity test 2: the image of the local test, netbooted diskless in a
// namespace where imprint serve is the DHCP server and names the machine
// (--reserve MAC=IP,node01). With no imprint.node= the agent takes the
// DHCP host name, takes the site's signed identity map from the server
// (the image's map plus a hostname template, so it shows it was taken),
// and the node gets the same identity files as a local boot of node01
// (the plan imprint identity preview makes from the tree): fstab variant,
// class layer, node file, machine-id; SSH host keys made at this boot.
func TestDisklessIdentityMatchesLocal(t *testing.T) {
	requireQEMU(t)
	testenv.NeedNetNS(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "imprint")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/imprint")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fx := buildFixture(t)
	root := fx.RootfsDir
	writeIdentityRoot(t, root)
	imprint(t, "identity", "check", "--rootfs", root)
	var plan identity.Plan
	if err := jsonUnmarshal(imprint(t, "identity", "preview", "--rootfs", root, "--node", "node01", "--json"), &plan); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"machine-id": plan.MachineID, "role": "none", "node-file": "none"}
	for _, f := range plan.Files {
		b, err := os.ReadFile(filepath.Join(root, f.From))
		if err != nil {
			t.Fatal(err)
		}
		want[strings.TrimPrefix(f.Path, "/etc/")] = string(b)
	}
	for _, l := range plan.Layers {
		for _, name := range []string{"role", "node-file"} {
			if b, err := os.ReadFile(filepath.Join(root, l.Dir, "etc", name)); err == nil {
				want[name] = string(b)
			}
		}
	}
	if want["fstab"] != "compute-fstab" || want["role"] != "compute-layer" || want["node-file"] != "node01-file" {
		t.Fatalf("the local plan of node01 is not what the local test boots: %+v", want)
	}
	want["hostname"] = "node01-site/node01-site"

	key := filepath.Join(dir, "site")
	imprint(t, "key", "generate", "--out", key)
	site := filepath.Join(dir, "identity.conf")
	if err := os.WriteFile(site, []byte(identityConf+"hostname {node}-site\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	imprint(t, "key", "sign", "--key", key+".key", site)
	agentImg := filepath.Join(dir, "agent.img")
	imprint(t, "initrd", "--modules", fx.Modules, "--imprint", bin, "--out", agentImg)
	store := filepath.Join(dir, "store")
	imprint(t, "build", "--store", store, "--name", "fixture", "--rootfs", root, "--sign", key+".key",
		"--cmdline", "console=ttyS0 ro panic=1", "--agent", agentImg)

	const mac = "52:54:00:70:00:17"
	n := newNetns(t, "10.70.0.1/24")
	log := serveIn(t, n, bin, "--store", store, "--image", "fixture", "--mode", "diskless", "--trust", key+".pub",
		"--identity", site, "--dhcp", "full", "--interface", n.tap, "--pool", "10.70.0.100-10.70.0.150",
		"--reserve", mac+"=10.70.0.17,node01", "--http", "10.70.0.1:8080")
	begin := time.Now()
	vm := pxeVM(t, n, qemu.UEFI, mac, true)
	if err := vm.Expect(t.Context(),
		qemu.Marker{Text: "IMPRINT-AGENT: network: ", Timeout: firmwareBoot + 2*time.Minute},
		qemu.Marker{Text: "IMPRINT-AGENT: identity: site map http://10.70.0.1:8080/identity/identity.conf, signature verified", Timeout: 3 * nextMarkerTimeout},
		qemu.Marker{Text: "IMPRINT-AGENT: identity: no imprint.node=: node node01 from DHCP host name node01", Timeout: 3 * nextMarkerTimeout},
		qemu.Marker{Text: "IMPRINT-AGENT: ssh host keys: made [ecdsa ed25519] kept [none], new at every boot", Timeout: nextMarkerTimeout},
		qemu.Marker{Text: "IMPRINT-TEST id: rootmount=", Timeout: nextMarkerTimeout},
		qemu.Marker{Text: "IMPRINT-TEST root: ok", Timeout: nextMarkerTimeout}); err != nil {
		t.Fatalf("%v\nserve:\n%s", err, log.String())
	}
	console := vm.Console()
	t.Logf("diskless boot as node01 in %v:\n%s", time.Since(begin).Round(time.Second), grepLines(console, "IMPRINT-"))
	got := parseIDLines(console)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("diskless node01: %s = %q, a local boot of node01 gets %q", k, got[k], v)
		}
	}
	if got["persisted"] != "." || got["rootmount"] != "overlay overlay" || !strings.HasSuffix(got["sshkey"], " root@node01") {
		t.Errorf("diskless node01: persisted %q rootmount %q sshkey %q", got["persisted"], got["rootmount"], got["sshkey"])
	}
}
