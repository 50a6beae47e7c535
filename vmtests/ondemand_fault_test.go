//go:build vmtest

package vmtests

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/netboot"
)

// faultInit replaces the fixture's /sbin/init: it shows the root
// server's argv[0], runs every applet it needs later once (so that after
// the kill the only new reads are of /fault), then asks the host's
// control URL to go ahead, a request the host answers only after it
// killed the image server, and reads /fault, 3 MiB no boot step reads.
const faultInit = `#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
[ -e /proc/cmdline ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777 tmpfs /tmp
pid=$(cat /sys/block/nbd0/pid)
echo "IMPRINT-TEST fault: server argv0=$(tr '\0' '\n' < /proc/$pid/cmdline | head -n 1)"
echo "IMPRINT-TEST fault: warm $(sha256sum /etc/imprint-test | cut -d ' ' -f 1)"
ctl=$(sed -n 's/.*imprint.test.ctl=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "IMPRINT-TEST fault: ready"
if wget -q -O /tmp/go "$ctl"; then
	echo "IMPRINT-TEST fault: reading /fault"
	echo "IMPRINT-TEST fault: sha256=$(sha256sum /fault | cut -d ' ' -f 1)"
else
	echo "IMPRINT-TEST fault: FAIL the control URL"
fi
poweroff -f
`

// restartable is the image server, killed and brought back on its port.
type restartable struct {
	t    *testing.T
	h    http.Handler
	port int
	srv  *http.Server
}

func (s *restartable) start() {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(s.port))
	if err != nil {
		s.t.Fatal(err)
	}
	s.port = ln.Addr().(*net.TCPAddr).Port
	s.srv = &http.Server{Handler: s.h}
	go s.srv.Serve(ln)
}

func (s *restartable) kill() { s.srv.Close() }

var waitLineRe = regexp.MustCompile(`IMPRINT-NBD: root source \S+ unreachable, waiting \(chunk \d+; chunks waiting: \d+; (\d+)s so far`)

// An on-demand root whose only server is killed while the guest reads a
// file it has not read: the read waits (no I/O error), the console says
// so naming the server and then again at its cadence, and the read
// completes with the file's bytes once the server is back on its port.
// With imprint.fill=1 the fill completes first, the server is killed for
// good, and the same read works from RAM. Both boots show the root
// server's argv[0] starting with '@' (systemd's shutdown spares it).
func TestOnDemandRootWaitsForItsServerAndFillOutlivesIt(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "imprint")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/imprint")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fx := buildFixture(t)
	data := make([]byte, 3<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	for name, b := range map[string][]byte{"fault": data, "sbin/init": []byte(faultInit)} {
		if err := os.WriteFile(filepath.Join(fx.RootfsDir, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	agentImg := filepath.Join(dir, "agent.img")
	imprint(t, "initrd", "--modules", fx.Modules, "--imprint", bin, "--out", agentImg)
	store := filepath.Join(dir, "store")
	imprint(t, "build", "--store", store, "--name", "fixture", "--rootfs", fx.RootfsDir, "--cmdline", "console=ttyS0 ro panic=1", "--agent", agentImg)

	for _, mode := range []string{"wait", "fill"} {
		t.Run(mode, func(t *testing.T) {
			img := &restartable{t: t, h: &netboot.HTTP{Store: store, Decider: netboot.Static{}, Logf: t.Logf}}
			img.start()
			defer func() { img.kill() }()
			// The control URL: the guest's request to it arrives (ready)
			// and is answered once the host killed the image server.
			ready, proceed := make(chan struct{}), make(chan struct{})
			ctlLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var once sync.Once
			ctl := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				once.Do(func() { close(ready) })
				select {
				case <-proceed:
					w.Write([]byte("go\n"))
				case <-r.Context().Done():
				}
			})}
			go ctl.Serve(ctlLn)
			defer ctl.Close()
			cmdline := "console=ttyS0 panic=1 imprint.image=fixture imprint.source=http://10.0.2.2:" + strconv.Itoa(img.port) + "/" +
				" imprint.test.ctl=http://10.0.2.2:" + strconv.Itoa(ctlLn.Addr().(*net.TCPAddr).Port) + "/go"
			if mode == "fill" {
				cmdline += " imprint.fill=1"
			}
			begin := time.Now()
			vm := startVM(t, qemu.Config{
				Kernel: fx.Kernel, Initrd: agentImg, MemoryMiB: 512, Append: cmdline,
				NICs: []qemu.NIC{{Netdev: "user"}},
				Args: []string{"-device", "virtio-rng-pci"},
			})
			ctx := t.Context()
			if err := vm.Expect(ctx,
				qemu.Marker{Text: "IMPRINT-AGENT: root on demand: partition root", Timeout: 3 * nextMarkerTimeout},
				qemu.Marker{Text: "IMPRINT-TEST fault: server argv0=", Timeout: nextMarkerTimeout},
				qemu.Marker{Text: "@imprint-root-server", Timeout: nextMarkerTimeout},
				qemu.Marker{Text: "IMPRINT-TEST fault: ready", Timeout: nextMarkerTimeout},
			); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ready:
			case <-time.After(2 * nextMarkerTimeout):
				t.Fatal("the guest never asked the control URL")
			}
			if mode == "fill" {
				// The fill may end before or after the guest's init
				// starts: looked for on the whole console.
				deadline := time.Now().Add(3 * nextMarkerTimeout)
				for !strings.Contains(vm.Console(), "IMPRINT-NBD: fill complete") {
					if time.Now().After(deadline) {
						t.Fatalf("no fill complete within %v:\n%s", 3*nextMarkerTimeout, grepLines(vm.Console(), "IMPRINT-"))
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
			img.kill()
			killed := time.Now()
			close(proceed)
			if err := vm.Expect(ctx, qemu.Marker{Text: "IMPRINT-TEST fault: reading /fault", Timeout: nextMarkerTimeout}); err != nil {
				t.Fatal(err)
			}
			if mode == "wait" {
				if err := vm.Expect(ctx, qemu.Marker{Text: "unreachable, waiting", Timeout: nextMarkerTimeout}); err != nil {
					t.Fatal(err)
				}
				first := time.Since(killed)
				if err := vm.Expect(ctx, qemu.Marker{Text: "unreachable, waiting", Timeout: nextMarkerTimeout}); err != nil {
					t.Fatal(err)
				}
				second := time.Since(killed)
				img.start()
				back := time.Now()
				if err := vm.Expect(ctx,
					qemu.Marker{Text: "IMPRINT-NBD: root source back", Timeout: nextMarkerTimeout},
					qemu.Marker{Text: "IMPRINT-TEST fault: sha256=" + want, Timeout: nextMarkerTimeout},
				); err != nil {
					t.Fatal(err)
				}
				t.Logf("server killed: wait said %v after the kill, again %v later; the read completed %v after the server came back",
					first.Round(time.Millisecond), (second - first).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
			} else {
				if err := vm.Expect(ctx, qemu.Marker{Text: "IMPRINT-TEST fault: sha256=" + want, Timeout: nextMarkerTimeout}); err != nil {
					t.Fatal(err)
				}
			}
			if err := vm.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			console := vm.Console()
			waits := waitLineRe.FindAllStringSubmatch(console, -1)
			switch {
			case mode == "wait" && len(waits) < 2:
				t.Errorf("%d wait lines with the seconds waited, want 2 or more:\n%s", len(waits), grepLines(console, "IMPRINT-NBD"))
			case mode == "fill" && strings.Contains(console, "unreachable"):
				t.Errorf("a filled root waited for its killed server:\n%s", grepLines(console, "IMPRINT-NBD"))
			}
			for _, bad := range []string{"Input/output error", "I/O error", "read of "} {
				if strings.Contains(console, bad) {
					t.Errorf("the console has %q: the wait reached the kernel as an error", bad)
				}
			}
			t.Logf("%s: %v in all:\n%s", mode, time.Since(begin).Round(time.Second), grepLines(console, "IMPRINT-"))
		})
	}
}
