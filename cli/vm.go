package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/internal/tmpdir"
	"github.com/imprint-dev/imprint/netboot"
	imstore "github.com/imprint-dev/imprint/store"
	"github.com/spf13/cobra"
)

func newVM(e *env) *cobra.Command {
	var (
		bios, persist bool
		entry, until  string
		memory        int
		timeout       time.Duration
		nb            vmNetboot
	)
	c := &cobra.Command{
		Use: "vm (DISK [--bios] [--entry ID] | --netboot SOURCE --image NAME[:VERSION] [--root ondemand|ram])",
		Example: `  imprint vm node.img --entry diskless
  imprint vm --netboot /srv/store --image compute
  imprint vm --netboot http://master:8080/ --image compute:7 --root ram --until 'login:'`,
		Short: "Boot a disk image, or an image from a store diskless, in QEMU (software emulation) with its serial console on this terminal",
		Long: `Boot a disk image in QEMU with OVMF (UEFI) or SeaBIOS (--bios), the serial
console on this terminal. Writes to the disk are discarded unless --persist.
--entry boots one menu entry: the default is changed on a sparse copy of the
disk, never on the disk itself.

With --netboot, SOURCE is a store (a directory, or an http(s) URL of a served
store) and the image boots diskless, with no disk at all: its kernel and
agent initramfs are booted directly, and the agent reads the root from this
command's own HTTP server (imprint serve's, on a loopback port the guest
reaches as 10.0.2.2 through QEMU user networking) on demand (--root ondemand,
the default) or whole into RAM (--root ram). The server stops when QEMU
exits.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			td, err := tmpdir.New("", "vm")
			if err != nil {
				return err
			}
			defer td.Remove()
			dir := td.Path
			var cfg qemu.Config
			if nb.on {
				for _, f := range []string{"bios", "entry", "persist"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--%s is for booting a disk; --netboot boots the image's kernel directly, with no disk", f)
					}
				}
				nb.source, nb.memory, nb.logf = args[0], memory, func(f string, a ...any) { fmt.Fprintf(e.io.Err, "imprint vm: "+f+"\n", a...) }
				run, err := nb.start(ctx, dir)
				if err != nil {
					return err
				}
				// The server stops when QEMU has exited, whatever way.
				defer run.stop()
				// Checked after the store and image, whose errors say
				// more about what to fix than a missing QEMU does.
				if err := qemu.Available(); err != nil {
					return err
				}
				fmt.Fprintf(e.io.Err, "imprint vm: booting %s diskless (imprint.root=%s) from %s, served at %s\n", run.plan.Image(), nb.root, nb.source, run.public)
				cfg = run.cfg
			} else {
				for _, f := range []string{"image", "root", "agent", "cmdline", "trust"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--%s needs --netboot", f)
					}
				}
				if err := qemu.Available(); err != nil {
					return err
				}
				if cfg, err = diskVM(args[0], dir, entry, bios, persist, memory); err != nil {
					return err
				}
			}
			cfg.Console = e.io.Out
			vm, err := qemu.Start(ctx, cfg)
			if err != nil {
				return err
			}
			defer vm.Close()
			if until != "" {
				if err := vm.Expect(ctx, qemu.Marker{Text: until, Timeout: timeout}); err != nil {
					return err
				}
				fmt.Fprintf(e.io.Err, "\nimprint vm: saw %q\n", until)
				vm.Kill()
				return nil
			}
			return vm.Wait(ctx)
		},
	}
	c.Flags().BoolVar(&bios, "bios", false, "boot with SeaBIOS (legacy BIOS) instead of OVMF (UEFI)")
	c.Flags().StringVar(&entry, "entry", "", "boot this menu entry")
	c.Flags().BoolVar(&persist, "persist", false, "keep the guest's writes to the disk")
	c.Flags().StringVar(&until, "until", "", "stop when this text appears on the console")
	c.Flags().IntVar(&memory, "memory", 1024, "guest memory in MiB")
	c.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: never)")
	c.Flags().BoolVar(&nb.on, "netboot", false, "boot an image from the store SOURCE (a directory or an http(s) URL) diskless, served to the guest from this command")
	c.Flags().StringVar(&nb.image, "image", "", "with --netboot: the image to boot, NAME or NAME:VERSION (default version: the newest)")
	c.Flags().StringVar(&nb.root, "root", "ondemand", "with --netboot: how the agent gets the root, ondemand (chunks fetched as they are read) or ram (whole root into RAM first)")
	c.Flags().StringVar(&nb.agent, "agent", "", "with --netboot: agent initramfs for an image that carries none (imprint initrd)")
	c.Flags().StringVar(&nb.cmdline, "cmdline", "", "with --netboot: extra kernel arguments")
	c.Flags().StringArrayVar(&nb.trust, "trust", nil, "with --netboot: boot only an image signed by this minisign public key (file or key text); the agent checks it too (repeatable)")
	return c
}

// diskVM is the machine that boots disk image diskPath; with an entry,
// from a sparse copy in dir whose default entry is changed.
func diskVM(diskPath, dir, entry string, bios, persist bool, memory int) (qemu.Config, error) {
	if entry != "" {
		cp := filepath.Join(dir, "disk.img")
		if err := disk.CopySparseFile(diskPath, cp); err != nil {
			return qemu.Config{}, err
		}
		t := espTarget{disk: cp}
		zero := 0
		if err := t.edit(func(esp *bootloader.ESP) (*bootloader.Menu, error) { return esp.SetDefault(entry, &zero) }); err != nil {
			return qemu.Config{}, fmt.Errorf("--entry: %w", err)
		}
		diskPath = cp
	}
	cfg := qemu.Config{
		Firmware: qemu.UEFI, MemoryMiB: memory, Dir: dir,
		Disks:    []qemu.Disk{{Path: diskPath}},
		Snapshot: !persist,
	}
	if bios {
		cfg.Firmware = qemu.BIOS
	}
	return cfg, nil
}

// vmNetboot is `imprint vm --netboot`: imprint serve's HTTP side for one
// image on a loopback port, and a machine that boots the image's kernel
// and agent directly with QEMU user networking, whose host address
// 10.0.2.2 reaches that port.
type vmNetboot struct {
	on                                  bool
	source, image, root, agent, cmdline string
	trust                               []string
	memory                              int
	logf                                func(string, ...any)
}

// guestHost is where a guest on QEMU user networking reaches the host's
// loopback.
const guestHost = "10.0.2.2"

// netbootRun is a started server and the machine to boot from it.
type netbootRun struct {
	plan   *netboot.BootPlan
	cfg    qemu.Config
	public string // the server's URL as the guest sees it
	local  string // the same server on the host's loopback
	stop   func() error
}

// start checks the options, serves the store and fetches the image's
// kernel and agent from that server into dir (as a netbooting machine
// would, every chunk checked), and returns the machine to boot.
func (o *vmNetboot) start(ctx context.Context, dir string) (*netbootRun, error) {
	if o.image == "" {
		return nil, fmt.Errorf("--netboot needs --image NAME[:VERSION]")
	}
	switch o.root {
	case "ondemand", "ram":
	default:
		return nil, fmt.Errorf("--root %q: want ondemand or ram", o.root)
	}
	h := &netboot.HTTP{Console: "console=ttyS0", Agent: o.agent, Logf: o.logf}
	// As imprint serve --trust: only an image signed by one of the keys
	// is served, and the agent checks it again in the guest.
	var err error
	if h.Trust, err = trustFlag(o.trust); err != nil {
		return nil, err
	}
	if len(o.trust) > 0 {
		if h.TrustKeys, err = trustKeyText(o.trust); err != nil {
			return nil, err
		}
	}
	if o.agent != "" {
		if _, err := os.Stat(o.agent); err != nil {
			return nil, fmt.Errorf("--agent: %w", err)
		}
	}
	if strings.HasPrefix(o.source, "http://") || strings.HasPrefix(o.source, "https://") {
		src, err := imstore.OpenHTTP(o.source)
		if err != nil {
			return nil, fmt.Errorf("--netboot %s: %w", o.source, err)
		}
		h.Disk = src
	} else {
		if _, err := os.Stat(o.source); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("--netboot: store %s: %w (give a store directory or an http(s) URL)", o.source, fs.ErrNotExist)
		} else if err != nil {
			return nil, fmt.Errorf("--netboot: store: %w", err)
		}
		if _, err := imstore.OpenDir(o.source); err != nil {
			return nil, fmt.Errorf("--netboot: %w", err)
		}
		h.Store = o.source
	}
	d := netboot.Decision{Image: o.image, Mode: netboot.Diskless, Cmdline: strings.TrimSpace("imprint.root=" + o.root + " " + o.cmdline)}
	h.Decider = netboot.Static{Default: d}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	h.Public = "http://" + net.JoinHostPort(guestHost, port) + "/"
	plan, err := h.Plan(ctx, d)
	if err == nil {
		err = plan.CheckAgent()
	}
	if err != nil {
		ln.Close()
		switch {
		case errors.Is(err, netboot.ErrNoKernel):
			return nil, fmt.Errorf("--image %s: %w: it cannot boot diskless (build it with --kernel or from a tree with /boot/vmlinuz-*)", o.image, err)
		case errors.Is(err, netboot.ErrNoAgent):
			return nil, fmt.Errorf("--image %s: %w: give --agent FILE (imprint initrd)", o.image, err)
		case errors.Is(err, imstore.ErrNotFound):
			return nil, fmt.Errorf("--image %s: no such image in %s: %w", o.image, o.source, err)
		}
		return nil, fmt.Errorf("--image %s from %s: %w", o.image, o.source, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	srv := &netboot.Server{HTTP: h, HTTPListener: ln, Logf: o.logf}
	done := make(chan error, 1)
	go func() { done <- srv.Run(sctx) }()
	var once sync.Once
	var stopErr error
	run := &netbootRun{plan: plan, public: h.Public, local: "http://" + ln.Addr().String() + "/"}
	run.stop = func() error {
		once.Do(func() {
			cancel()
			stopErr = <-done
		})
		return stopErr
	}
	kernel, agent := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "agent.img")
	for _, f := range []struct{ path, file string }{{kernel, plan.Kernel}, {agent, plan.Agent}} {
		if err := download(ctx, run.local+f.file, f.path); err != nil {
			run.stop()
			return nil, fmt.Errorf("image %s: %w", plan.Image(), err)
		}
	}
	run.cfg = qemu.Config{
		Firmware: qemu.BIOS, MemoryMiB: o.memory, Dir: dir,
		Kernel: kernel, Initrd: agent, Append: strings.Join(plan.Args, " "),
		NICs: []qemu.NIC{{Netdev: "user"}},
		// Without an entropy source the agent's crypto/rand blocks for
		// minutes under TCG.
		Args: []string{"-device", "virtio-rng-pci"},
	}
	return run, nil
}

// download saves url's body to path.
func download(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return f.Close()
}
