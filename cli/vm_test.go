package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/netboot"
)

// vmStore builds a store with three images from raw files: "full" (kernel
// and agent), "noagent" (kernel only) and "nokernel" (neither). It returns
// the store and the files' paths by name.
func vmStore(t *testing.T) (store string, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	store = filepath.Join(dir, "store")
	files = map[string]string{}
	for _, f := range []string{"root", "vmlinuz", "agent"} {
		files[f] = filepath.Join(dir, f)
		n := 300<<10 + 17 // boot files: not a chunk multiple
		if f == "root" {
			n = 1 << 20
		}
		randomFile(t, files[f], n)
	}
	base := []string{"--store", store, "--partition", "root=" + files["root"], "--chunk-size", "64K", "--cmdline", "root=/dev/sda2 ro panic=1"}
	buildImage(t, append(base, "--name", "full", "--version", "1", "--kernel", files["vmlinuz"], "--agent", files["agent"])...)
	buildImage(t, append(base, "--name", "noagent", "--version", "1", "--kernel", files["vmlinuz"])...)
	buildImage(t, append(base, "--name", "nokernel", "--version", "1")...)
	pub, err := image.GenerateKey(filepath.Join(dir, "site"))
	if err != nil {
		t.Fatal(err)
	}
	files["pub"] = pub
	buildImage(t, append(base, "--name", "signed", "--version", "1", "--kernel", files["vmlinuz"], "--agent", files["agent"], "--sign", filepath.Join(dir, "site.key"))...)
	return store, files
}

// The errors a user can make with --netboot are said before anything is
// served or booted, naming the flag and the thing that is wrong.
func TestVMNetbootRefusesBadInputClearly(t *testing.T) {
	store, files := vmStore(t)
	keys := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(keys, "site"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unsigned image under --trust", []string{"--netboot", store, "--image", "full", "--trust", pub}, "--image full from " + store + ": image \"full\": none of its 1 versions is signed by a trusted key"},
		{"bad --trust", []string{"--netboot", store, "--image", "full", "--trust", filepath.Join(keys, "none.pub")}, "--trust"},
		{"trust without netboot", []string{files["root"], "--trust", pub}, "--trust needs --netboot"},
		{"store path missing", []string{"--netboot", filepath.Join(t.TempDir(), "nothere"), "--image", "full"}, "nothere: file does not exist"},
		{"not a store", []string{"--netboot", t.TempDir(), "--image", "full"}, "is not an imprint store"},
		{"no such image", []string{"--netboot", store, "--image", "other"}, "--image other: no such image in " + store},
		{"no such version", []string{"--netboot", store, "--image", "full:9"}, "--image full:9: no such image in " + store},
		{"image without a kernel", []string{"--netboot", store, "--image", "nokernel"}, "--image nokernel: image nokernel:1: the image carries no kernel: it cannot boot diskless"},
		{"image without an agent", []string{"--netboot", store, "--image", "noagent"}, "--image noagent: image noagent:1: the image carries no agent initramfs and the server has none for it: give --agent FILE"},
		{"no image", []string{"--netboot", store}, "--netboot needs --image"},
		{"bad root", []string{"--netboot", store, "--image", "full", "--root", "disk"}, `--root "disk": want ondemand or ram`},
		{"agent file missing", []string{"--netboot", store, "--image", "noagent", "--agent", filepath.Join(t.TempDir(), "a.img")}, "--agent: "},
		{"disk flag with netboot", []string{"--netboot", store, "--image", "full", "--entry", "local"}, "--entry is for booting a disk"},
		{"bios with netboot", []string{"--netboot", store, "--image", "full", "--bios"}, "--bios is for booting a disk"},
		{"netboot flag without netboot", []string{files["root"], "--root", "ram"}, "--root needs --netboot"},
		{"http store unreachable", []string{"--netboot", "http://127.0.0.1:1/", "--image", "full"}, "--image full from http://127.0.0.1:1/: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := run(t, append([]string{"vm"}, tc.args...)...)
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q; want an error containing %q", code, errs, tc.want)
			}
		})
	}
}

// The machine --netboot plans boots the image's own kernel and agent, as
// fetched from the command's server (so their chunks were checked on the
// way), with a kernel command line that sends the agent back to that
// server at the address QEMU user networking gives the host, the root on
// demand unless --root ram; the server answers while the machine would
// run and is gone after stop. The same holds for a store given by URL,
// served onward by the command.
func TestVMNetbootPlansADisklessBootFromItsOwnServer(t *testing.T) {
	store, files := vmStore(t)
	upstream := httptest.NewServer(&netboot.HTTP{Store: store, Decider: netboot.Static{}})
	defer upstream.Close()
	keyText, err := trustKeyText([]string{files["pub"]})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                  string
		o                     vmNetboot
		wantAgent, wantRoot   string
		wantImage, wantExtras string
	}{
		{"directory store", vmNetboot{source: store, image: "full", root: "ondemand"}, files["agent"], "imprint.root=ondemand", "full:1", ""},
		{"ram root and extra args", vmNetboot{source: store, image: "full:1", root: "ram", cmdline: "imprint.node=n7"}, files["agent"], "imprint.root=ram", "full:1", "imprint.node=n7"},
		{"http store", vmNetboot{source: upstream.URL + "/", image: "full", root: "ondemand"}, files["agent"], "imprint.root=ondemand", "full:1", ""},
		{"signed image under --trust", vmNetboot{source: store, image: "signed", root: "ondemand", trust: []string{files["pub"]}}, files["agent"], "imprint.root=ondemand", "signed:1", "imprint.trust=" + keyText},
		{"agent given for an image without one", vmNetboot{source: store, image: "noagent", root: "ondemand", agent: files["root"]}, files["root"], "imprint.root=ondemand", "noagent:1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.o.memory = 768
			run, err := tc.o.start(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			defer run.stop()
			cfg := run.cfg
			same := func(got, want string) {
				t.Helper()
				a, _ := os.ReadFile(got)
				b, _ := os.ReadFile(want)
				if len(a) == 0 || !bytes.Equal(a, b) {
					t.Errorf("%s (%d bytes) is not %s (%d bytes)", got, len(a), want, len(b))
				}
			}
			same(cfg.Kernel, files["vmlinuz"])
			same(cfg.Initrd, tc.wantAgent)
			if !strings.HasPrefix(run.public, "http://10.0.2.2:") || !strings.HasPrefix(run.local, "http://127.0.0.1:") ||
				strings.TrimPrefix(run.public, "http://10.0.2.2:") != strings.TrimPrefix(run.local, "http://127.0.0.1:") {
				t.Errorf("guest URL %s and host URL %s are not one loopback port", run.public, run.local)
			}
			args := " " + cfg.Append + " "
			for _, want := range []string{"imprint.source=" + run.public, "imprint.image=" + tc.wantImage, tc.wantRoot, "console=ttyS0", "ro", "panic=1", tc.wantExtras} {
				if want != "" && !strings.Contains(args, " "+want+" ") {
					t.Errorf("kernel command line %q lacks %q", cfg.Append, want)
				}
			}
			for _, bad := range []string{"root=/dev/sda2", "initrd="} {
				if strings.Contains(args, bad) {
					t.Errorf("kernel command line %q has %q", cfg.Append, bad)
				}
			}
			if cfg.Firmware != qemu.BIOS || len(cfg.Disks) != 0 || len(cfg.NICs) != 1 || cfg.NICs[0].Netdev != "user" ||
				cfg.MemoryMiB != 768 || !strings.Contains(strings.Join(cfg.Args, " "), "virtio-rng-pci") {
				t.Errorf("machine: %+v", cfg)
			}
			// What the agent fetches first: the manifest, from the
			// server the machine would reach.
			manifest := run.local + "images/" + strings.Replace(tc.wantImage, ":", "/", 1) + "/manifest.json"
			resp, err := http.Get(manifest)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %s", manifest, resp.Status)
			}
			if err := run.stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
			if _, err := http.Get(manifest); err == nil {
				t.Errorf("the server still answers after stop")
			}
		})
	}
}

// The plan's errors wrap the sentinels callers act on.
func TestVMNetbootErrorsWrapSentinels(t *testing.T) {
	store, _ := vmStore(t)
	for img, want := range map[string]error{"nokernel": netboot.ErrNoKernel, "noagent": netboot.ErrNoAgent} {
		o := vmNetboot{source: store, image: img, root: "ondemand"}
		if _, err := o.start(context.Background(), t.TempDir()); !errors.Is(err, want) {
			t.Errorf("%s: %v; want %v", img, err, want)
		}
	}
}
