//go:build vmtest

package vmtests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/internal/qemu"
)

// BootTimeEnv opts in to TestBootTimeAgentVsOwnInitrd (bench/boot/run.sh):
// six boots are a measurement, not a check the suite needs each run.
const BootTimeEnv = "IMPRINT_BENCH_BOOT"

var (
	appliedRE = regexp.MustCompile(`IMPRINT-AGENT: identity: node .* applied in ([0-9.]+)(ms|s|µs)`)
	agentRE   = regexp.MustCompile(`IMPRINT-AGENT: root from .* \(([0-9.]+)(ms|s) since the agent started\)`)
)

func parseDur(v, unit string) time.Duration {
	d, _ := time.ParseDuration(v + unit)
	return d
}

func median[T int64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// Boot time of one disk's local entry through imprint's agent (local mode,
// identity applied, overlay) against its local-initrd entry (the image's
// own initrd: mount the root, switch to it), same VM, same run, alternating,
// three boots each; the median of each, from QEMU's start to the image's
// init saying it is done. Also: the agent's time to apply identity, and the
// overlay's memory (Shmem in the guest's /proc/meminfo, agent boot minus
// own-initrd boot). Every boot must reach the image's init.
func TestBootTimeAgentVsOwnInitrd(t *testing.T) {
	if os.Getenv(BootTimeEnv) != "1" {
		t.Skip("a benchmark: run bench/boot/run.sh (" + BootTimeEnv + "=1)")
	}
	requireQEMU(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "imprint")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/imprint")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fx := buildFixture(t)
	writeIdentityRoot(t, fx.RootfsDir)
	agentImg := filepath.Join(dir, "agent.img")
	imprint(t, "initrd", "--modules", fx.Modules, "--imprint", bin, "--out", agentImg)
	store := filepath.Join(dir, "store")
	imprint(t, "build", "--store", store, "--name", "fixture", "--rootfs", fx.RootfsDir,
		"--cmdline", "console=ttyS0 ro panic=1", "--agent", agentImg)
	disk := filepath.Join(dir, "disk.img")
	// One slot: the bench copies the plain local entry (as the identity
	// tests do).
	imprint(t, "deploy", "--from", store, "--image", "fixture", "--disk", disk, "--yes", "--boot-timeout", "0", "--size", "1G", "--firmware", "uefi", "--slots", "1")
	var menu bootloader.Menu
	if err := jsonUnmarshal(imprint(t, "boot", "list", "--disk", disk, "--json"), &menu); err != nil {
		t.Fatal(err)
	}
	local, ok := menu.Find("local")
	if !ok {
		t.Fatalf("no local entry: %+v", menu.Entries)
	}
	imprint(t, "boot", "add", "--disk", disk, "--id", "bench-agent", "--title", "agent as node01", "--kernel", local.Linux,
		"--initrd", local.Initrd[0], "--options", local.Options+" imprint.node=node01")

	type sample struct {
		boot, applied, agent, kernel time.Duration
		shmem                        int64
	}
	runs := map[string][]sample{}
	for i := 0; i < 3; i++ {
		for _, entry := range []string{"bench-agent", bootloader.LocalOwnInitrd} {
			imprint(t, "boot", "default", entry, "--disk", disk)
			begin := time.Now()
			vm := startVM(t, qemu.Config{Firmware: qemu.UEFI, Disks: []qemu.Disk{{Path: disk}}, Args: []string{"-device", "virtio-rng-pci"}})
			if err := vm.Expect(t.Context(), qemu.Marker{Text: "IMPRINT-TEST root: ok", Timeout: firmwareBoot}); err != nil {
				t.Fatalf("%s boot %d: %v", entry, i+1, err)
			}
			s := sample{boot: time.Since(begin)}
			if err := vm.Wait(t.Context()); err != nil {
				t.Fatalf("%s boot %d: %v", entry, i+1, err)
			}
			console := vm.Console()
			ids := parseIDLines(console)
			s.shmem, _ = strconv.ParseInt(ids["shmem-kib"], 10, 64)
			if up, err := strconv.ParseFloat(ids["uptime"], 64); err == nil {
				s.kernel = time.Duration(up * float64(time.Second))
			}
			if m := appliedRE.FindStringSubmatch(console); m != nil {
				s.applied = parseDur(m[1], m[2])
			}
			if m := agentRE.FindStringSubmatch(console); m != nil {
				s.agent = parseDur(m[1], m[2])
			}
			if (entry == "bench-agent") != (s.applied > 0) {
				t.Fatalf("%s boot %d: agent lines %v; console:\n%s", entry, i+1, s.applied, grepLines(console, "IMPRINT-"))
			}
			runs[entry] = append(runs[entry], s)
			t.Logf("%s boot %d: %v to the image's init done (%v of it after the kernel started), Shmem %d KiB, identity applied in %v, agent %v",
				entry, i+1, s.boot.Round(10*time.Millisecond), s.kernel.Round(10*time.Millisecond), s.shmem, s.applied, s.agent)
		}
	}
	stat := func(entry string) (boot time.Duration, shmem int64, applied, agent, kernel time.Duration) {
		var b, ap, ag, k []time.Duration
		var sh []int64
		for _, s := range runs[entry] {
			b, ap, ag, sh, k = append(b, s.boot), append(ap, s.applied), append(ag, s.agent), append(sh, s.shmem), append(k, s.kernel)
		}
		return median(b), median(sh), median(ap), median(ag), median(k)
	}
	ab, ash, aap, aag, ak := stat("bench-agent")
	ob, osh, _, _, ok2 := stat(bootloader.LocalOwnInitrd)
	size := func(p string) int64 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	var lines []string
	lines = append(lines, fmt.Sprintf("local entry through the agent: median %v (boots %s)", ab.Round(10*time.Millisecond), list(runs["bench-agent"], func(s sample) time.Duration { return s.boot })))
	lines = append(lines, fmt.Sprintf("local-initrd (the image's own): median %v (boots %s)", ob.Round(10*time.Millisecond), list(runs[bootloader.LocalOwnInitrd], func(s sample) time.Duration { return s.boot })))
	lines = append(lines, fmt.Sprintf("ratio agent / own initrd: %.2fx", float64(ab)/float64(ob)))
	lines = append(lines, fmt.Sprintf("kernel start to the image's init (guest uptime, median): agent %v, own initrd %v", ak.Round(10*time.Millisecond), ok2.Round(10*time.Millisecond)))
	lines = append(lines, fmt.Sprintf("initrd sizes: agent %d KiB, own %d KiB", size(agentImg)>>10, size(fx.Initrd)>>10))
	lines = append(lines, fmt.Sprintf("identity applied in (median): %v; agent start to switch root (median): %v", aap, aag))
	lines = append(lines, fmt.Sprintf("Shmem at the image's init: agent %d KiB, own initrd %d KiB: overlay adds %d KiB", ash, osh, ash-osh))
	t.Logf("BOOT TIMES (3 boots each, alternating, OVMF + systemd-boot, TCG):\n%s", strings.Join(lines, "\n"))
}

func list[S any](xs []S, f func(S) time.Duration) string {
	var out []string
	for _, x := range xs {
		out = append(out, f(x).Round(10*time.Millisecond).String())
	}
	return strings.Join(out, " ")
}
