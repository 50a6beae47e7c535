// Package deploy is the one orchestration of a deploy: plan, partition,
// copy, verify, record. The CLI, the agent's install mode and sync all use it.
package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/tmpdir"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

// ErrVerify says the read-back after writing found chunks that differ.
var ErrVerify = errors.New("read-back verification failed")

// ErrAborted says the plan was not confirmed.
var ErrAborted = errors.New("aborted: the plan was not confirmed")

// Event is one step of a deploy, for progress display and --json.
type Event struct {
	Kind      string `json:"event"` // plan, phase, progress, checkpoint, warning, complete
	Phase     string `json:"phase,omitempty"`
	Partition string `json:"partition,omitempty"`
	Done      int64  `json:"done,omitempty"`
	Total     int64  `json:"total,omitempty"`
	Chunks    int    `json:"chunks,omitempty"`
	Message   string `json:"message,omitempty"`
	Plan      *Plan  `json:"plan,omitempty"`
}

// Options configure one deploy.
type Options struct {
	// Sources are the stores chunks come from, tried in order per chunk.
	Sources []store.Source
	Image   *image.Resolved
	Disk    string // block device or image file
	Size    int64  // create or grow an image file to this size
	Verify  bool
	DryRun  bool
	// Confirm sees the plan before anything is written; an error aborts.
	Confirm func(*Plan) error
	Events  func(Event) // calls do not overlap
	TmpDir  string
	// CheckpointEvery is how often the journal is synced to the ESP.
	CheckpointEvery time.Duration
	Boot            BootOptions
	// KeepExisting keeps every partition already on the disk and places the
	// image in the largest free region, reusing the disk's ESP (dual boot).
	KeepExisting bool
	// Trust, when set, is the set of keys the image must be signed by;
	// anything else is refused before a byte is written.
	Trust *image.Trust
	// Live, when set, gets a source serving the disk while it is being
	// written (chunks as they land; see openLiveSource), so other deploys
	// can take from this one before it completes. The caller owns it.
	Live func(*DiskSource)
}

// BootOptions choose the boot menu a deploy installs.
type BootOptions struct {
	Skip   bool   // write no boot loader
	Loader string // systemd-boot (default) or grub
	// Firmware is uefi, bios or both; "" picks both for image files and
	// removable disks when the image carries GRUB for BIOS, else uefi.
	Firmware    string
	DisklessURL string
	NetbootURL  string
	Timeout     int
	AgentInitrd []byte
	TrustKey    string // public key the diskless entry's agent requires
	NoNetboot   bool
}

// Plan is what a deploy will do, shown before it does it.
type Plan struct {
	Disk      string                `json:"disk"`
	DiskSize  int64                 `json:"disk_size"`
	Block     bool                  `json:"block_device"`
	Create    bool                  `json:"create_file"`
	Image     string                `json:"image"`
	ImageID   string                `json:"image_id"`
	Resume    bool                  `json:"resume"`
	Table     *layout.Table         `json:"table"`
	Destroyed []layout.GPTPartition `json:"destroyed,omitempty"`
	Kept      []layout.GPTPartition `json:"kept,omitempty"`
}

func (p *Plan) kept(guid string) bool {
	for _, k := range p.Kept {
		if k.GUID == guid {
			return true
		}
	}
	return false
}

// Result is what a finished deploy reports.
type Result struct {
	Plan      *Plan         `json:"plan"`
	BytesFrom []int64       `json:"bytes_from_source"`
	Written   int64         `json:"bytes_written"`
	Skipped   int64         `json:"bytes_resumed"`
	Verified  bool          `json:"verified"`
	Elapsed   time.Duration `json:"elapsed_ns"`
}

func (o *Options) emit(e Event) {
	if o.Events != nil {
		o.Events(e)
	}
}

// Run deploys o.Image onto o.Disk.
func Run(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	tmpdir.Sweep(o.TmpDir) // best effort: what killed builds and deploys left behind
	if ev := o.Events; ev != nil {
		// Copier workers report warnings and progress concurrently; the
		// caller gets its events one at a time.
		var mu sync.Mutex
		o.Events = func(e Event) {
			mu.Lock()
			defer mu.Unlock()
			ev(e)
		}
	}
	m := o.Image.Manifest
	if err := o.Trust.Check(o.Image); err != nil {
		return nil, err
	}
	if err := disk.CheckTarget(o.Disk); err != nil {
		return nil, err
	}
	plan, dev, resume, err := prepare(&o)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		defer dev.Close()
	}
	if !o.Boot.Skip {
		// Before anything is written: a boot setup the image has no
		// loader for is refused, not found out after the copy.
		if err := checkLoaders(m, o.Boot, plan.Table); err != nil {
			return nil, fmt.Errorf("boot loader: %w", err)
		}
	}
	o.emit(Event{Kind: "plan", Plan: plan})
	if o.DryRun {
		return &Result{Plan: plan}, nil
	}
	if o.Confirm != nil {
		if err := o.Confirm(plan); err != nil {
			return nil, err
		}
	}

	var st *State
	var esp *disk.FAT
	if resume != nil {
		st, esp = resume.State, resume.ESP
		st.Status = StatusWriting
	} else {
		st, esp, err = partitionDisk(ctx, o, dev, plan)
		if err != nil {
			return nil, err
		}
	}

	if o.Live != nil {
		live, err := openLiveSource(o.Disk, o.Image, st.Table, st.Done)
		if err != nil {
			return nil, fmt.Errorf("serve while deploying: %w", err)
		}
		o.Live(live)
	}

	res := &Result{Plan: plan}
	cp := &copier.Copier{ChunkSize: m.ChunkSize, Fetch: fetch.New(o.Sources, fetch.Options{OnError: func(i int, _ string, err error) {
		o.emit(Event{Kind: "warning", Message: fmt.Sprintf("source %d: %v; trying the next source", i+1, err)})
	}})}
	cp.Dec, err = image.NewDecoder()
	if err != nil {
		return nil, err
	}
	defer cp.Dec.Close()

	j := &journal{dev: dev, esp: esp, st: st, every: o.CheckpointEvery, emit: o.emit}
	for _, p := range m.Partitions {
		if p.Content == nil {
			continue
		}
		placed, _ := st.Table.Find(p.Name)
		bm := st.Done[p.Name]
		total := p.Content.Size
		var done, skipped int64
		var mu sync.Mutex
		o.emit(Event{Kind: "phase", Phase: "write", Partition: p.Name, Total: total})
		stop := j.start(ctx)
		err := cp.Write(ctx, p.Content, target{disk.Section{D: dev, Off: placed.Start, Len: placed.Len}, dev, placed.Start}, copier.Hooks{
			Skip: func(i int) bool {
				if bm.Has(i) {
					mu.Lock()
					skipped += p.Content.ChunkLen(i, m.ChunkSize)
					mu.Unlock()
					return true
				}
				return false
			},
			Done: bm.Set,
			Progress: func(n int64) {
				mu.Lock()
				done += n
				d := done
				mu.Unlock()
				o.emit(Event{Kind: "progress", Phase: "write", Partition: p.Name, Done: d, Total: total})
			},
		})
		if cerr := stop(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("partition %s: %w", p.Name, err)
		}
		res.Written += total - skipped
		res.Skipped += skipped
	}

	if o.Verify {
		for _, p := range m.Partitions {
			if p.Content == nil {
				continue
			}
			placed, _ := st.Table.Find(p.Name)
			if err := dev.DropCache(placed.Start, p.Content.Size); err != nil {
				o.emit(Event{Kind: "warning", Message: fmt.Sprintf("could not drop the page cache before verifying: %v", err)})
			}
			o.emit(Event{Kind: "phase", Phase: "verify", Partition: p.Name, Total: p.Content.Size})
			var done int64
			var mu sync.Mutex
			bad, err := cp.Verify(ctx, p.Content, disk.Section{D: dev, Off: placed.Start, Len: placed.Len}, func(n int64) {
				mu.Lock()
				done += n
				d := done
				mu.Unlock()
				o.emit(Event{Kind: "progress", Phase: "verify", Partition: p.Name, Done: d, Total: p.Content.Size})
			})
			if err != nil {
				return nil, fmt.Errorf("verify partition %s: %w", p.Name, err)
			}
			if len(bad) > 0 {
				// Unmark them so a rerun writes them again.
				fresh := copier.NewBitmap(len(p.Content.Chunks))
				for i := range len(p.Content.Chunks) {
					if st.Done[p.Name].Has(i) && !contains(bad, i) {
						fresh.Set(i)
					}
				}
				st.Done[p.Name] = fresh
				_ = j.checkpoint()
				return nil, fmt.Errorf("%w: partition %s: %d chunks read back differ (first at byte %d); the disk may be failing", ErrVerify, p.Name, len(bad), int64(bad[0])*m.ChunkSize)
			}
		}
		res.Verified = true
	}

	if !o.Boot.Skip {
		o.emit(Event{Kind: "phase", Phase: "bootloader"})
		if err := installBoot(ctx, o, cp, dev, esp, st.Table, !plan.kept(espGUID(st.Table))); err != nil {
			return nil, fmt.Errorf("boot loader: %w", err)
		}
		if err := dev.Sync(); err != nil {
			return nil, err
		}
	}

	now := time.Now().UTC()
	st.Status, st.Completed, st.Verified, st.Done = StatusComplete, &now, res.Verified, nil
	if err := j.checkpoint(); err != nil {
		return nil, err
	}
	if err := dev.RereadPartitions(); err != nil {
		o.emit(Event{Kind: "warning", Message: err.Error()})
	}
	res.Elapsed = time.Since(start)
	res.BytesFrom = cp.BytesFrom()
	o.emit(Event{Kind: "complete", Message: fmt.Sprintf("image %s:%s (%s) deployed to %s", m.Name, m.Version, o.Image.ID, o.Disk)})
	return res, nil
}

// withBIOSBoot gives the layout the 1 MiB partition GRUB i386-pc needs
// when the disk is to boot on legacy BIOS too.
func withBIOSBoot(l layout.Layout, b BootOptions) layout.Layout {
	if b.Skip || b.Firmware == bootloader.UEFI {
		return l
	}
	for _, p := range l.Partitions {
		if p.Role == layout.RoleBIOSBoot {
			return l
		}
	}
	out := layout.Layout{Partitions: []layout.Spec{{Name: "bios-boot", Type: layout.TypeBIOSBoot, Role: layout.RoleBIOSBoot, Size: layout.Align}}}
	out.Partitions = append(out.Partitions, l.Partitions...)
	return out
}

// installBoot puts the boot menu on the new disk: the image's kernel and
// initrd on the ESP, the UEFI loader and entries, and GRUB for BIOS.
func espGUID(t *layout.Table) string {
	p, _ := t.ByRole(layout.RoleESP)
	return p.GUID
}

func installBoot(ctx context.Context, o Options, cp *copier.Copier, dev *disk.Disk, esp *disk.FAT, t *layout.Table, newESP bool) error {
	m := o.Image.Manifest
	if m.Boot == nil || m.Boot.Kernel == nil {
		o.emit(Event{Kind: "warning", Message: "the image has no kernel: the disk gets no boot menu"})
		return nil
	}
	kernel, err := cp.ReadContent(ctx, m.Boot.Kernel)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	initrd, err := cp.ReadContent(ctx, m.Boot.Initrd)
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	b := o.Boot
	if m.Boot.Agent != nil && b.AgentInitrd == nil {
		if b.AgentInitrd, err = cp.ReadContent(ctx, m.Boot.Agent); err != nil {
			return fmt.Errorf("agent initramfs: %w", err)
		}
	}
	rp, err := m.RootPartition()
	if err != nil {
		return err
	}
	root, ok := t.Find(rp.Name)
	if !ok {
		return fmt.Errorf("partition %s is not on the disk", rp.Name)
	}
	uuid, err := esp.VolumeID()
	if err != nil {
		return err
	}
	b.Firmware = firmware(b.Firmware, t)
	if err := checkLoaders(m, b, t); err != nil {
		return err
	}
	loaders, err := fetchLoaders(ctx, cp, m)
	if err != nil {
		return err
	}
	// Every loader the image carries is kept on the ESP as the image has
	// it (before any per-disk patch), so the disk holds every file of its
	// image and can be served or exported whole.
	for _, name := range sortedLoaders(m) {
		if err := esp.WriteFile(LoadersDir+"/"+name, loaders[name]); err != nil {
			return fmt.Errorf("write %s/%s on the ESP: %w", LoadersDir, name, err)
		}
	}
	if _, err := bootloader.Install(ctx, esp, bootloader.InstallOptions{
		Loader: b.Loader, Firmware: b.Firmware, NewESP: newESP, Loaders: loaders,
		Name: m.Name, Version: m.Version, Kernel: kernel, Initrd: initrd, Cmdline: m.Boot.Cmdline,
		RootPARTUUID: root.GUID, DisklessURL: b.DisklessURL, AgentInitrd: b.AgentInitrd, TrustKey: b.TrustKey, NetbootURL: b.NetbootURL,
		Timeout: b.Timeout, ESPUUID: uuid, TmpDir: o.TmpDir, NoNetboot: b.NoNetboot,
	}); err != nil {
		return err
	}
	if b.Firmware == bootloader.UEFI {
		return nil
	}
	bb, ok := t.ByRole(layout.RoleBIOSBoot)
	if !ok {
		return fmt.Errorf("firmware %s needs a BIOS boot partition and the layout has none", b.Firmware)
	}
	return bootloader.InstallBIOS(ctx, dev, bb, bootloader.BIOSOptions{
		BootImg: loaders[image.LoaderGrubBIOSBoot], CoreImg: loaders[image.LoaderGrubBIOSCore],
	})
}

// LoadersDir holds, on a deployed disk's ESP, every loader binary of its
// image, as the manifest names them.
const LoadersDir = StateDir + "/loaders"

// firmware resolves an unset firmware choice for a disk already placed
// (a resumed deploy): both when it has a BIOS boot partition.
func firmware(f string, t *layout.Table) string {
	if f != "" {
		return f
	}
	if _, ok := t.ByRole(layout.RoleBIOSBoot); ok {
		return bootloader.Both
	}
	return bootloader.UEFI
}

// checkLoaders refuses a boot setup that needs a loader the image does not
// carry, naming the choice and the loader.
func checkLoaders(m *image.Manifest, b BootOptions, t *layout.Table) error {
	if m.Boot == nil || m.Boot.Kernel == nil {
		return nil // no boot menu at all; Run warns
	}
	fw := firmware(b.Firmware, t)
	loader := b.Loader
	if loader == "" {
		loader = bootloader.SystemdBoot
	}
	req, _ := bootloader.NeededLoaders(loader, fw, !b.NoNetboot)
	for _, name := range req {
		if m.Loaders[name] != nil {
			continue
		}
		var choice string
		switch name {
		case image.LoaderGrubBIOSBoot, image.LoaderGrubBIOSCore:
			choice = "--firmware " + fw + " (GRUB for legacy BIOS)"
		case image.LoaderIPXEEFI:
			choice = "the netboot entry (leave it out with --no-netboot)"
		default:
			choice = "--bootloader " + loader
		}
		return bootloader.MissingLoader(name, choice)
	}
	return nil
}

// hasBIOSLoaders says whether the image can boot under legacy BIOS.
func hasBIOSLoaders(m *image.Manifest) bool {
	return m.Loaders[image.LoaderGrubBIOSBoot] != nil && m.Loaders[image.LoaderGrubBIOSCore] != nil
}

func sortedLoaders(m *image.Manifest) []string {
	names := make([]string, 0, len(m.Loaders))
	for n := range m.Loaders {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// fetchLoaders reads every loader of the image through the copier: each
// chunk checked against its name from whichever source gives it right,
// then the whole against the manifest. A source that sends a changed
// loader is passed over like one that sends a changed root chunk.
func fetchLoaders(ctx context.Context, cp *copier.Copier, m *image.Manifest) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, name := range sortedLoaders(m) {
		b, err := cp.ReadContent(ctx, m.Loaders[name])
		if err != nil {
			return nil, fmt.Errorf("loader %s: %w", name, err)
		}
		out[name] = b
	}
	return out, nil
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// autoFirmware is the firmware default want, narrowed to UEFI (with a
// warning) when the image carries no GRUB for legacy BIOS.
func autoFirmware(o *Options, want string) string {
	if want == bootloader.UEFI || o.Boot.Skip || hasBIOSLoaders(o.Image.Manifest) {
		return want
	}
	o.emit(Event{Kind: "warning", Message: fmt.Sprintf("the image carries no GRUB for legacy BIOS (%s, %s): the disk boots under UEFI only", image.LoaderGrubBIOSBoot, image.LoaderGrubBIOSCore)})
	return bootloader.UEFI
}

// prepare opens the target and decides between a fresh deploy and a resume.
func prepare(o *Options) (*Plan, *disk.Disk, *OnDisk, error) {
	m := o.Image.Manifest
	lay := m.Layout()
	plan := &Plan{Disk: o.Disk, Image: m.Name + ":" + m.Version, ImageID: o.Image.ID}
	_, statErr := os.Stat(o.Disk)
	plan.Create = errors.Is(statErr, os.ErrNotExist)
	if plan.Create && o.KeepExisting {
		return nil, nil, nil, fmt.Errorf("--keep-existing: %s does not exist; it needs a disk that already has a GPT", o.Disk)
	}
	if plan.Create {
		// Plan before creating anything, so a layout that does not fit
		// leaves no file behind.
		if o.Size <= 0 {
			return nil, nil, nil, fmt.Errorf("%s does not exist; give --size to create an image file", o.Disk)
		}
		plan.DiskSize = o.Size
		if o.Boot.Firmware == "" {
			o.Boot.Firmware = autoFirmware(o, bootloader.Both)
		}
		t, err := layout.Place(withBIOSBoot(lay, o.Boot), o.Size, 512)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", o.Disk, err)
		}
		plan.Table = t
		if !o.Boot.Skip {
			// Before the file is created, so a refusal leaves none.
			if err := checkLoaders(m, o.Boot, t); err != nil {
				return nil, nil, nil, fmt.Errorf("boot loader: %w", err)
			}
		}
		if o.DryRun {
			return plan, nil, nil, nil
		}
	}
	dev, err := disk.OpenDisk(o.Disk, disk.OpenOptions{Write: !o.DryRun, Create: true, Size: o.Size})
	if err != nil {
		return nil, nil, nil, err
	}
	plan.DiskSize, plan.Block = dev.Size(), dev.IsBlock()
	fail := func(err error) (*Plan, *disk.Disk, *OnDisk, error) {
		dev.Close()
		return nil, nil, nil, err
	}
	if !plan.Create {
		od, err := ReadDisk(dev)
		if od != nil {
			plan.Destroyed = od.GPT
		}
		if err == nil && od.State.ImageID == o.Image.ID && od.State.Status != StatusComplete &&
			od.State.Table.DiskSize == dev.Size() && tableMatches(od.State.Table, od.GPT) {
			plan.Resume, plan.Table, plan.Destroyed = true, od.State.Table, nil
			for _, p := range m.Partitions {
				if p.Content != nil && (od.State.Done[p.Name] == nil || od.State.Done[p.Name].Len() != len(p.Content.Chunks)) {
					od.State.Done[p.Name] = copier.NewBitmap(len(p.Content.Chunks))
				}
			}
			return plan, dev, od, nil
		}
	}
	if o.KeepExisting {
		return prepareBeside(o, plan, dev, lay)
	}
	if o.Boot.Firmware == "" {
		o.Boot.Firmware = bootloader.UEFI
		if !dev.IsBlock() || dev.Removable() {
			o.Boot.Firmware = autoFirmware(o, bootloader.Both)
		}
	}
	t, err := layout.Place(withBIOSBoot(lay, o.Boot), dev.Size(), dev.SectorSize())
	if err != nil {
		return fail(fmt.Errorf("%s: %w", o.Disk, err))
	}
	if _, ok := t.ByRole(layout.RoleESP); !ok {
		return fail(fmt.Errorf("%w: the layout has no ESP to keep imprint's state in", layout.ErrBadLayout))
	}
	plan.Table = t
	return plan, dev, nil, nil
}

// prepareBeside plans a dual-boot deploy: every existing partition stays.
// The firmware default is UEFI only, since GRUB for BIOS would replace the
// MBR boot code another system may rely on.
func prepareBeside(o *Options, plan *Plan, dev *disk.Disk, lay layout.Layout) (*Plan, *disk.Disk, *OnDisk, error) {
	fail := func(err error) (*Plan, *disk.Disk, *OnDisk, error) {
		dev.Close()
		return nil, nil, nil, err
	}
	guid, parts, err := disk.ReadGPT(dev)
	if err != nil {
		return fail(fmt.Errorf("--keep-existing: %s: %w", o.Disk, err))
	}
	if o.Boot.Firmware == "" {
		o.Boot.Firmware = bootloader.UEFI
	}
	hasESP := false
	for _, p := range parts {
		if p.Type == layout.TypeESP {
			hasESP = true
		}
	}
	t, err := layout.PlaceBeside(withBIOSBoot(lay, o.Boot), parts, guid, dev.Size(), dev.SectorSize(), hasESP)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", o.Disk, err))
	}
	if _, ok := t.ByRole(layout.RoleESP); !ok {
		return fail(fmt.Errorf("%w: neither the disk nor the layout has an ESP to keep imprint's state in", layout.ErrBadLayout))
	}
	plan.Table, plan.Kept, plan.Destroyed = t, parts, nil
	return plan, dev, nil, nil
}

// partitionDisk writes the GPT, formats the ESP and local partitions, and
// records the starting state.
func partitionDisk(ctx context.Context, o Options, dev *disk.Disk, plan *Plan) (*State, *disk.FAT, error) {
	t := plan.Table
	o.emit(Event{Kind: "phase", Phase: "partition"})
	if err := disk.WriteGPT(dev, t); err != nil {
		return nil, nil, err
	}
	espP, _ := t.ByRole(layout.RoleESP)
	var esp *disk.FAT
	var err error
	if plan.kept(espP.GUID) {
		esp, err = disk.OpenFAT(dev, espP.Start, espP.Len)
	} else {
		esp, err = disk.FormatFAT(dev, espP, "ESP")
	}
	if err != nil {
		return nil, nil, err
	}
	for _, p := range t.Partitions {
		if p.Role != layout.RoleLocal || plan.kept(p.GUID) {
			continue
		}
		sec := disk.Section{D: dev, Off: p.Start, Len: p.Len}
		switch p.FS {
		case "swap":
			err = disk.MakeSwap(sec, p.Name)
		case "ext4":
			err = disk.MakeExt4(ctx, sec, p.Name, o.TmpDir)
			if errors.Is(err, disk.ErrNoTool) {
				// Node-local state, not the image: leaving it for the
				// node to format on first boot loses nothing.
				o.emit(Event{Kind: "warning", Message: fmt.Sprintf("%v: partition %s is left unformatted", err, p.Name)})
				err = nil
			}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("partition %s: %w", p.Name, err)
		}
	}
	m := o.Image.Manifest
	st := &State{
		Format: 1, ImageID: o.Image.ID, Name: m.Name, Version: m.Version,
		Status: StatusWriting, Started: time.Now().UTC(), Table: t,
		Done: map[string]*copier.Bitmap{},
	}
	for _, p := range m.Partitions {
		if p.Content != nil {
			st.Done[p.Name] = copier.NewBitmap(len(p.Content.Chunks))
		}
	}
	// The manifest goes first: a state file always names a manifest that is
	// already there.
	if err := esp.WriteFile(ManifestFile, o.Image.Raw); err != nil {
		return nil, nil, fmt.Errorf("write %s on the ESP: %w", ManifestFile, err)
	}
	if o.Image.Signature != nil {
		err = esp.WriteFile(SignatureFile, o.Image.Signature)
	} else {
		err = esp.Remove(SignatureFile) // a kept ESP may hold an older image's
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s on the ESP: %w", SignatureFile, err)
	}
	if err := dev.Sync(); err != nil {
		return nil, nil, err
	}
	if err := writeState(dev, esp, st); err != nil {
		return nil, nil, err
	}
	o.emit(Event{Kind: "phase", Phase: "partitioned"})
	return st, esp, nil
}

func writeState(dev *disk.Disk, esp *disk.FAT, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := esp.WriteFile(StateFile, append(b, '\n')); err != nil {
		return fmt.Errorf("write %s on the ESP: %w", StateFile, err)
	}
	return dev.Sync()
}

// target is a partition with exact zeroing through the whole device.
type target struct {
	disk.Section
	dev *disk.Disk
	off int64
}

func (t target) ZeroRange(off, n int64) error { return t.dev.ZeroRange(t.off+off, n) }

// journal checkpoints the state while chunks are being written.
type journal struct {
	dev   *disk.Disk
	esp   *disk.FAT
	st    *State
	every time.Duration
	emit  func(Event)
	mu    sync.Mutex
}

// checkpoint syncs the data written so far, then records which chunks it
// holds. The bitmaps are cloned before the sync, so every chunk in the
// record was written before the sync began.
func (j *journal) checkpoint() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	snap := *j.st
	snap.Done = map[string]*copier.Bitmap{}
	n := 0
	for k, v := range j.st.Done {
		c := v.Clone()
		snap.Done[k] = c
		n += c.Count()
	}
	if err := j.dev.Sync(); err != nil {
		return err
	}
	if err := writeState(j.dev, j.esp, &snap); err != nil {
		return err
	}
	j.emit(Event{Kind: "checkpoint", Chunks: n})
	return nil
}

// start runs checkpoints in the background until the returned stop is
// called; stop writes a last one.
func (j *journal) start(ctx context.Context) (stop func() error) {
	every := j.every
	if every <= 0 {
		every = 2 * time.Second
	}
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				errc <- nil
				return
			case <-ctx.Done():
				errc <- nil
				return
			case <-t.C:
				if err := j.checkpoint(); err != nil {
					errc <- err
					return
				}
			}
		}
	}()
	return func() error {
		close(done)
		if err := <-errc; err != nil {
			return err
		}
		return j.checkpoint()
	}
}
