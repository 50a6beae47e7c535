package cli

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/spf13/cobra"
)

func newSync(e *env) *cobra.Command {
	var (
		from  []string
		ref   string
		trust []string
		o     deploy.SyncOptions
		sw    swarmFlags
	)
	c := &cobra.Command{
		Use:   "sync --from SRC... [--image NAME[:VERSION]] [--disk DEV]",
		Short: "Write a newer image into the inactive root slot of a deployed disk, fetching only the chunks it does not hold",
		Long: `sync writes an image into the root slot the disk does not boot, then makes
it the default boot entry with a try counter. Chunks already on the disk
(in either slot) are read locally and checked, never fetched. The active
slot and every other partition are never written. A killed sync resumes
when run again; until it completes the disk boots what it booted before.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var err error
			if o.Trust, err = trustFlag(trust); err != nil {
				return err
			}
			if o.Disk == "" {
				if o.Disk, err = runningDisk(); err != nil {
					return fmt.Errorf("--disk not given and %w", err)
				}
			}
			if o.Disk, err = disk.Select("/", o.Disk); err != nil {
				return fmt.Errorf("--disk: %w", err)
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
			if name == "" {
				if name, err = diskImageName(o.Disk); err != nil {
					return err
				}
			}
			if o.Image, err = fetch.New(o.Sources, fetch.Options{}).Resolve(ctx, name, version, o.Trust); err != nil {
				return err
			}
			if sw.on && !o.DryRun {
				if o.Swarm, err = sw.options(from); err != nil {
					return err
				}
			}
			if o.Swarm != nil {
				defer o.Swarm.Node.Close()
			}
			o.RunningRoot = runningRootPARTUUID()
			o.ESPDir = mountedESP(o.Disk)
			o.Events = func(ev deploy.Event) {
				if e.json {
					e.emitJSON(ev)
				} else if ev.Kind == "warning" {
					fmt.Fprintf(e.io.Err, "warning: %s\n", ev.Message)
				}
			}
			res, err := deploy.Sync(ctx, o)
			if err != nil {
				return err
			}
			if e.json {
				e.emitJSON(map[string]any{"event": "result", "result": res})
				return nil
			}
			p := res.Plan
			if p.UpToDate {
				e.printf("%s already runs %s from slot %s: nothing to do\n", p.Disk, p.Image, p.Active)
				return nil
			}
			e.printf("sync %s (image id %s) into slot %s of %s; slot %s (%s) stays untouched\n", p.Image, p.ImageID, p.Slot, p.Disk, p.Active, p.ActiveImage)
			if o.DryRun {
				e.printf("  %s in all: %s already in place, %s to read from the disk, %s in %d chunks to fetch (raw)\n  dry run: nothing was written\n",
					layout.HumanSize(p.Total), layout.HumanSize(p.InPlace), layout.HumanSize(p.Local), layout.HumanSize(p.ToFetch), p.ChunksToFetch)
				return nil
			}
			e.printf("  done in %s: %s already in place, %s resumed, %s reused from the disk, %s fetched (%s as sent)\n",
				res.Elapsed.Round(time.Millisecond), layout.HumanSize(res.InPlace), layout.HumanSize(res.Resumed), layout.HumanSize(res.Local),
				layout.HumanSize(res.Fetched), layout.HumanSize(res.FetchedStored))
			if res.FromSwarm > 0 {
				e.printf("  %s from the swarm\n", layout.HumanSize(res.FromSwarm))
			}
			for _, f := range res.From {
				e.printf("  %s (%s as sent) from %s\n", layout.HumanSize(f.Raw), layout.HumanSize(f.Stored), f.Source)
			}
			if len(res.Pruned) > 0 {
				e.printf("  removed the boot files of %s from the ESP\n", strings.Join(res.Pruned, ", "))
			}
			e.printf("  slot %s boots next, with %d tries\n", p.Slot, max(o.Tries, deploy.DefaultTries*boolInt(o.Tries == 0)))
			return nil
		},
	}
	f := c.Flags()
	f.StringArrayVar(&from, "from", nil, "where chunks the disk lacks come from: store directory, http(s):// store or peer; repeat for more")
	f.StringArrayVar(&trust, "trust", nil, "minisign public key (file or key text) the image must be signed by; repeatable")
	f.StringVar(&ref, "image", "", "image NAME or NAME:VERSION (default: the disk's image name, newest version)")
	f.StringVar(&o.Disk, "disk", "", "the deployed disk (block device or image file); default: the disk the running root is on")
	f.BoolVar(&o.DryRun, "dry-run", false, "show the plan and the bytes it would fetch; write nothing")
	f.BoolVar(&o.AllowDowngrade, "allow-downgrade", false, "write an image whose version is older than the active one's")
	f.BoolVar(&o.Verify, "verify", false, "read the written slot back")
	f.IntVar(&o.Tries, "tries", deploy.DefaultTries, "boots the new version gets to succeed before the loader prefers the other slot")
	f.DurationVar(&o.CheckpointEvery, "checkpoint-interval", 2*time.Second, "how often progress is journaled for resume")
	_ = f.MarkHidden("checkpoint-interval")
	sw.register(f)
	_ = c.MarkFlagRequired("from")
	return c
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// diskImageName is the name of the image the disk's active slot holds.
func diskImageName(p string) (string, error) {
	dev, err := disk.OpenDisk(p, disk.OpenOptions{})
	if err != nil {
		return "", err
	}
	defer dev.Close()
	od, err := ondisk.ReadDisk(dev)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return od.State.Name, nil
}

// runningRootPARTUUID is root=PARTUUID= of the running kernel's command
// line, "" when it names the root otherwise.
func runningRootPARTUUID() string {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return ""
	}
	for _, w := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(w, "root=PARTUUID="); ok {
			return v
		}
	}
	return ""
}

// runningDisk is the whole disk the running root partition is on.
func runningDisk() (string, error) {
	id := runningRootPARTUUID()
	if id == "" {
		return "", fmt.Errorf("the running root is not given as root=PARTUUID=: give --disk")
	}
	part, err := filepath.EvalSymlinks("/dev/disk/by-partuuid/" + strings.ToLower(id))
	if err != nil {
		return "", fmt.Errorf("the running root's partition: %w", err)
	}
	parent, err := filepath.EvalSymlinks("/sys/class/block/" + filepath.Base(part) + "/..")
	if err != nil {
		return "", err
	}
	return "/dev/" + filepath.Base(parent), nil
}

// mountedESP is where the disk's ESP is mounted, "" when it is not: a
// running node's ESP is written through its filesystem.
func mountedESP(diskPath string) string {
	dev, err := disk.OpenDisk(diskPath, disk.OpenOptions{})
	if err != nil || !dev.IsBlock() {
		if dev != nil {
			dev.Close()
		}
		return ""
	}
	_, parts, err := disk.ReadGPT(dev)
	dev.Close()
	if err != nil {
		return ""
	}
	esp, ok := layout.FindESP(parts)
	if !ok {
		return ""
	}
	node, err := filepath.EvalSymlinks("/dev/disk/by-partuuid/" + strings.ToLower(esp.GUID))
	if err != nil {
		return ""
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 2 {
			continue
		}
		if src, err := filepath.EvalSymlinks(fl[0]); err == nil && src == node {
			return strings.ReplaceAll(fl[1], `\040`, " ")
		}
	}
	return ""
}
