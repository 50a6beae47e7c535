//go:build vmtest

package vmtests

import (
	"bytes"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/cli"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

var servedAtRe = regexp.MustCompile(`served at http://10\.0\.2\.2:(\d+)/`)

// `imprint vm --netboot STORE --image fixture` boots the fixture from its
// store with no disk: the image's kernel and agent, the root read on demand
// from /dev/nbd0 served by the command's own HTTP server, the console on
// the command's output; the command returns when the guest powers off, and
// its server is gone by then.
func TestVMNetbootBootsTheStoreOnDemand(t *testing.T) {
	requireQEMU(t)
	im := buildNetImage(t)
	scale, err := qemu.TimeoutScale()
	if err != nil {
		t.Fatal(err)
	}
	limit := time.Duration(float64(5*time.Minute) * scale)
	args := []string{"vm", "--netboot", im.store, "--image", "fixture", "--memory", "512", "--timeout", limit.String()}
	var out, errb bytes.Buffer
	begin := time.Now()
	code := cli.Run(t.Context(), args, cli.Stdio{In: strings.NewReader(""), Out: &out, Err: &errb})
	took := time.Since(begin)
	console := out.String()
	if code != 0 {
		t.Fatalf("imprint %s: exit %d\n%s\nconsole:\n%s", strings.Join(args, " "), code, errb.String(), console)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("imprint vm --netboot: %v (load %s)\n%s\n%s", took.Round(time.Second), strings.TrimSpace(string(load)), errb.String(), grepLines(console, "IMPRINT-"))
	markers := []string{
		"IMPRINT-AGENT: starting",
		"IMPRINT-AGENT: network:",
		"IMPRINT-AGENT: root on demand: partition root",
		"root from the network on demand (/dev/nbd0) mounted read-only",
		fixture.RootSHA256Marker + im.fx.FileSHA256,
		fixture.RootOKMarker,
	}
	rest := console
	for i, m := range markers {
		j := strings.Index(rest, m)
		if j < 0 {
			t.Fatalf("marker %d of %d %q not on the console after the previous one:\n%s", i+1, len(markers), m, grepLines(console, "IMPRINT-"))
		}
		rest = rest[j+len(m):]
	}
	if strings.Contains(console, "IMPRINT-AGENT: root sha256=") {
		t.Error("the default --root fetched the whole root into RAM")
	}
	port := servedAtRe.FindStringSubmatch(errb.String())
	if port == nil {
		t.Fatalf("imprint vm did not say where it served:\n%s", errb.String())
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port[1], time.Second); err == nil {
		c.Close()
		t.Errorf("the server on port %s still listens after QEMU exited", port[1])
	}
}
