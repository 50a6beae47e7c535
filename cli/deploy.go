package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newDeploy(e *env) *cobra.Command {
	var (
		from          []string
		ref, size     string
		slotSize      string
		yes, noVerify bool
		bios          bool
		agentFile     string
		trust         []string
		serveAddr     string
		layoutFile    string
		sw            swarmFlags
		o             deploy.Options
	)
	c := &cobra.Command{
		Use:   "deploy --from STORE --image NAME[:VERSION] --disk PATH",
		Short: "Partition a disk or image file and write an image onto it bit-for-bit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var err error
			if o.Trust, err = trustFlag(trust); err != nil {
				return err
			}
			if len(trust) > 0 {
				o.Boot.TrustKey, err = trustKeyText(trust)
				if err != nil {
					return err
				}
			}
			target, err := disk.Select("/", o.Disk)
			if err != nil {
				return fmt.Errorf("--disk: %w", err)
			}
			if target != o.Disk {
				fmt.Fprintf(e.io.Err, "--disk %s is %s\n", o.Disk, target)
				o.Disk = target
			}
			for _, f := range from {
				src, closeSrc, err := openSource(f)
				if err != nil {
					return fmt.Errorf("--from %s: %w", f, err)
				}
				defer closeSrc()
				o.Sources = append(o.Sources, src)
			}
			name, version, _ := strings.Cut(ref, ":")
			o.Image, err = fetch.New(o.Sources, fetch.Options{}).Resolve(ctx, name, version, o.Trust)
			if err != nil {
				return err
			}
			if o.Swarm, err = sw.options(from); err != nil {
				return err
			}
			if o.Swarm != nil {
				defer o.Swarm.Node.Close()
			}
			if bios {
				if o.Boot.Firmware != "" && o.Boot.Firmware != "both" {
					return fmt.Errorf("--bios contradicts --firmware %s", o.Boot.Firmware)
				}
				o.Boot.Firmware = "both"
			}
			switch o.Boot.Firmware {
			case "", "uefi", "bios", "both":
			default:
				return fmt.Errorf("--firmware %q: want uefi, bios or both", o.Boot.Firmware)
			}
			o.Verify = !noVerify
			if agentFile != "" {
				b, err := os.ReadFile(agentFile)
				if err != nil {
					return fmt.Errorf("--agent: %w", err)
				}
				o.Boot.AgentInitrd = b
			}
			if layoutFile != "" {
				l, err := readLayoutFile(layoutFile)
				if err != nil {
					return err
				}
				// Checked here too so the error names the flag before a
				// disk is opened.
				if _, err := o.Image.Manifest.FitLayout(l); err != nil {
					return fmt.Errorf("--layout %s: %w", layoutFile, err)
				}
				o.Layout = &l
			}
			if slotSize != "" {
				if o.SlotSize, err = layout.ParseSize(slotSize); err != nil {
					return fmt.Errorf("--slot-size: %w", err)
				}
			}
			if size != "" {
				if o.Size, err = layout.ParseSize(size); err != nil {
					return fmt.Errorf("--size: %w", err)
				}
			}
			pr := newProgress(e)
			o.Events = func(ev deploy.Event) {
				if e.json {
					e.emitJSON(ev)
					return
				}
				switch ev.Kind {
				case "plan":
					printPlan(e.io.Err, ev.Plan)
				case "progress":
					pr.update(ev.Phase+" "+ev.Partition, ev.Done, ev.Total)
				case "warning":
					fmt.Fprintf(e.io.Err, "warning: %s\n", ev.Message)
				}
			}
			if !yes {
				o.Confirm = func(p *deploy.Plan) error { return confirm(e, p) }
			}
			var served *netboot.Live
			if serveAddr != "" && !o.DryRun {
				logf := func(f string, a ...any) { fmt.Fprintf(e.io.Err, f+"\n", a...) }
				if served, err = netboot.StartLive(serveAddr, &o, logf); err != nil {
					return fmt.Errorf("--serve: %w", err)
				}
				defer func() {
					if err := served.Stop(); err != nil {
						fmt.Fprintf(e.io.Err, "imprint: %v\n", err)
					}
				}()
			}
			res, err := deploy.Deploy(ctx, o)
			pr.finish()
			if err != nil {
				return err
			}
			if served != nil && o.Swarm != nil {
				// Seed the deployed disk in the swarm for as long as it is
				// served over HTTP.
				leave, err := seedDeployed(o.Swarm, o.Image, o.Disk, res.Plan.Table, res.Plan.Slot)
				if err != nil {
					fmt.Fprintf(e.io.Err, "warning: swarm: %v\n", err)
				} else {
					defer leave()
				}
			}
			if served != nil {
				defer func() {
					if err := served.ServeDeployed(ctx, o.Disk); err != nil {
						fmt.Fprintf(e.io.Err, "imprint: %v\n", err)
					}
				}()
			}
			if e.json {
				e.emitJSON(map[string]any{"event": "result", "result": res})
				return nil
			}
			if o.DryRun {
				e.printf("dry run: nothing was written\n")
				return nil
			}
			verified := "not verified (--no-verify)"
			if res.Verified {
				verified = "verified by read-back"
			}
			e.printf("deployed %s (image id %s) to %s in %s: %s written, %s resumed, %s\n",
				res.Plan.Image, res.Plan.ImageID, res.Plan.Disk, res.Elapsed.Round(time.Millisecond),
				layout.HumanSize(res.Written), layout.HumanSize(res.Skipped), verified)
			if o.Trust != nil {
				e.printf("  signature verified by a trusted key\n")
			}
			if res.FromSwarm > 0 {
				e.printf("  %s from the swarm\n", layout.HumanSize(res.FromSwarm))
			}
			if len(from) > 1 {
				for i, n := range res.BytesFrom {
					e.printf("  %s from %s\n", layout.HumanSize(n), from[i])
				}
			}
			return nil
		},
	}
	f := c.Flags()
	f.BoolVar(&o.AllowDowngrade, "allow-downgrade", false, "replace a newer version of the image on the disk with an older one (refused otherwise)")
	f.StringArrayVar(&from, "from", nil, "where to read the image from: a store directory, an http(s):// store or peer, or a deployed disk; repeat for more sources (tried in order per chunk)")
	f.StringArrayVar(&trust, "trust", nil, "minisign public key (file or key text) the image must be signed by; repeatable (any one suffices)")
	f.StringVar(&ref, "image", "", "image NAME or NAME:VERSION (default version: the newest)")
	f.StringVar(&o.Disk, "disk", "", "target block device or image file; "+disk.SelectorHelp)
	f.StringVar(&serveAddr, "serve", "", "serve the disk over HTTP at this address while it is written (chunks as they land) and after, until interrupted: other deploys can --from it at once")
	sw.register(f)
	f.StringVar(&layoutFile, "layout", "", "partition the disk by this layout file (text, sfdisk dump or JSON) instead of the image's default; the image id does not change")
	f.IntVar(&o.Slots, "slots", 0, "root slots: 2 (a and b, for imprint sync) or 1; default 2 when the disk has room for both")
	f.StringVar(&slotSize, "slot-size", "", "size of each root slot (default: the root's size plus a quarter, at least 64 MiB more)")
	f.StringVar(&size, "size", "", "create or grow an image file to this size (e.g. 8G)")
	f.BoolVar(&yes, "yes", false, "do not ask before writing")
	f.BoolVar(&o.DryRun, "dry-run", false, "show the plan and write nothing")
	f.BoolVar(&noVerify, "no-verify", false, "skip the read-back verification")
	f.DurationVar(&o.CheckpointEvery, "checkpoint-interval", 2*time.Second, "how often progress is journaled for resume")
	_ = f.MarkHidden("checkpoint-interval")
	f.StringVar(&o.Boot.Loader, "bootloader", "systemd-boot", "UEFI boot loader: systemd-boot or grub")
	f.StringVar(&o.Boot.Firmware, "firmware", "", "uefi, bios or both (default: both for image files and removable disks when the image carries GRUB for BIOS, else uefi)")
	f.BoolVar(&bios, "bios", false, "also boot on legacy BIOS (same as --firmware both)")
	f.BoolVar(&o.KeepExisting, "keep-existing", false, "keep every partition on the disk, put the image in the largest free region, reuse its ESP (dual boot)")
	f.BoolVar(&o.Boot.Skip, "no-bootloader", false, "write no boot loader or menu")
	f.StringVar(&o.Boot.DisklessURL, "diskless-url", "", "add a diskless entry that fetches the image from this server")
	f.StringVar(&agentFile, "agent", "", "agent initramfs for the diskless entry (default: the image's own, if it carries one)")
	f.StringVar(&o.Boot.NetbootURL, "netboot-url", "", "server the netboot (iPXE) entry chains to")
	f.IntVar(&o.Boot.Timeout, "boot-timeout", 3, "boot menu timeout in seconds")
	for _, r := range []string{"from", "image", "disk"} {
		_ = c.MarkFlagRequired(r)
	}
	return c
}

// readLayoutFile reads a --layout file in any form layout.ParseLayout knows.
func readLayoutFile(path string) (layout.Layout, error) {
	f, err := os.Open(path)
	if err != nil {
		return layout.Layout{}, fmt.Errorf("--layout: %w", err)
	}
	defer f.Close()
	l, err := layout.ParseLayout(f)
	if err != nil {
		return layout.Layout{}, fmt.Errorf("--layout %s: %w", path, err)
	}
	return l, nil
}

func printPlan(w io.Writer, p *deploy.Plan) {
	kind := "image file"
	if p.Block {
		kind = "block device"
	}
	if p.Create {
		kind = "new image file"
	}
	fmt.Fprintf(w, "Plan for %s (%s, %s):\n", p.Disk, kind, layout.HumanSize(p.DiskSize))
	fmt.Fprintf(w, "  image %s, id %s\n", p.Image, p.ImageID)
	if p.Slots == 2 {
		fmt.Fprintf(w, "  root slots a and b; the image goes into slot %s\n", p.Slot)
	}
	if p.Resume {
		fmt.Fprintf(w, "  resumes an interrupted deploy of the same image: only chunks not yet written are written\n")
	}
	if len(p.Kept) > 0 {
		fmt.Fprintf(w, "  keeps %d existing partition(s) untouched\n", len(p.Kept))
	}
	if len(p.Destroyed) > 0 {
		fmt.Fprintf(w, "  DESTROYS %d existing partition(s):\n", len(p.Destroyed))
		for _, d := range p.Destroyed {
			fmt.Fprintf(w, "    %d %-20q %10s  %s\n", d.Index, d.Name, layout.HumanSize(d.Len), layout.TypeName(d.Type))
		}
	}
	fmt.Fprintf(w, "  %-2s %-12s %-9s %10s %10s  %s\n", "#", "name", "role", "start", "size", "type")
	for _, q := range p.Table.Partitions {
		t := layout.TypeName(q.Type)
		if q.FS != "" {
			t += " (" + q.FS + ")"
		}
		fmt.Fprintf(w, "  %-2d %-12s %-9s %10s %10s  %s\n", q.Index, q.Name, q.Role, layout.HumanSize(q.Start), layout.HumanSize(q.Len), t)
	}
}

func confirm(e *env, p *deploy.Plan) error {
	f, ok := e.io.In.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return fmt.Errorf("%w (no terminal to ask on; add --yes to write %s)", deploy.ErrAborted, p.Disk)
	}
	fmt.Fprintf(e.io.Err, "Write %s? Everything on it listed above is lost. Type yes: ", p.Disk)
	line, _ := bufio.NewReader(e.io.In).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return deploy.ErrAborted
	}
	return nil
}
