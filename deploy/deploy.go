// Package deploy writes images onto disks as steps (MakePlan, then a
// Target's Partition, WriteContents, InstallBoot, Commit) and composes
// them: Deploy for a whole disk, which the CLI and the agent's install mode
// use; Sync, for one slot of a running disk, is to compose the same steps.
// The record the steps leave on the disk is package ondisk's.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
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
	// Layout, when set, overrides the image's default layout (the store's
	// layout.json, else the one the manifest implies).
	Layout *layout.Layout
	// AllowDowngrade lets the image replace a newer version of itself on
	// the disk (ondisk.CheckDowngrade); without it that is refused.
	AllowDowngrade bool
	// Trust, when set, is the set of keys the image must be signed by;
	// anything else is refused before a byte is written.
	Trust *image.Trust
	// Slots and SlotSize: see PlanOptions.
	Slots    int
	SlotSize int64
	// Live, when set, gets a source serving the disk while it is being
	// written (chunks as they land; see ondisk.OpenLive), so other deploys
	// can take from this one before it completes. The caller owns it.
	Live func(*ondisk.DiskSource)
	// Swarm, when set, takes the partitions' chunks from the image's
	// swarm first (see SwarmOptions).
	Swarm *SwarmOptions
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
	Disk     string `json:"disk"`
	DiskSize int64  `json:"disk_size"`
	Block    bool   `json:"block_device"`
	Create   bool   `json:"create_file"`
	Image    string `json:"image"`
	ImageID  string `json:"image_id"`
	Resume   bool   `json:"resume"`
	// Layout is the layout the table was placed from, fitted to the image
	// (recorded on the disk as imprint/layout.json); nil on a resume.
	Layout    *layout.Layout        `json:"layout,omitempty"`
	Table     *layout.Table         `json:"table"`
	Destroyed []layout.GPTPartition `json:"destroyed,omitempty"`
	Kept      []layout.GPTPartition `json:"kept,omitempty"`
	// Firmware is what the disk is made to boot on: uefi, bios or both.
	Firmware string `json:"firmware"`
	// Narrowed says a default of both firmwares became uefi because the
	// image carries no GRUB for legacy BIOS.
	Narrowed bool `json:"-"`
	// Slots is 1 or 2 (root slots a and b); Slot is the one written, ""
	// with one slot.
	Slots int    `json:"slots"`
	Slot  string `json:"slot,omitempty"`

	resume *ondisk.OnDisk // the record of the interrupted deploy a resume continues
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
	FromSwarm int64         `json:"bytes_from_swarm"`
	Verified  bool          `json:"verified"`
	Elapsed   time.Duration `json:"elapsed_ns"`
}

func (o *Options) emit(e Event) {
	if o.Events != nil {
		o.Events(e)
	}
}

// withBIOSBoot gives the layout the 1 MiB partition GRUB i386-pc needs
// when the disk is to boot on legacy BIOS too.
func withBIOSBoot(l layout.Layout, firmware string, noBoot bool) layout.Layout {
	if noBoot || firmware == bootloader.UEFI {
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

func installBoot(ctx context.Context, o Options, cp *copier.Copier, dev *disk.Disk, esp *disk.FAT, st *ondisk.State, newESP bool) error {
	t := st.Table
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
	root, ok := t.Find(st.PartitionOf(rp.Name))
	if !ok {
		return fmt.Errorf("partition %s is not on the disk", st.PartitionOf(rp.Name))
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
		if err := esp.WriteFile(ondisk.LoadersDir+"/"+name, loaders[name]); err != nil {
			return fmt.Errorf("write %s/%s on the ESP: %w", ondisk.LoadersDir, name, err)
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
	if st.Slot != "" {
		if err := bootloader.UseSlotEntry(esp, st.Slot); err != nil {
			return err
		}
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

// partitionDisk writes the GPT, formats the ESP and local partitions, and
// records the starting state.
func partitionDisk(ctx context.Context, o *Target, plan *Plan) (*ondisk.State, *ondisk.Record, *disk.FAT, error) {
	t, dev := plan.Table, o.Dev
	o.emit(Event{Kind: "phase", Phase: "partition"})
	if err := disk.WriteGPT(dev, t); err != nil {
		return nil, nil, nil, err
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
		return nil, nil, nil, err
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
			return nil, nil, nil, fmt.Errorf("partition %s: %w", p.Name, err)
		}
	}
	m := o.Image.Manifest
	st := &ondisk.State{
		Format: 1, ImageID: o.Image.ID, Name: m.Name, Version: m.Version,
		Status: ondisk.StatusWriting, Started: time.Now().UTC(), Table: t, Firmware: plan.Firmware,
		Done: map[string]*copier.Bitmap{}, Slot: plan.Slot,
	}
	for _, p := range m.Partitions {
		if p.Content != nil {
			st.Done[p.Name] = copier.NewBitmap(len(p.Content.Chunks))
		}
	}
	var rec *ondisk.Record
	if plan.Slot != "" {
		rec = &ondisk.Record{Format: ondisk.RecordFormat, Table: t, Active: plan.Slot, Slots: map[string]*ondisk.State{plan.Slot: st}}
		err = ondisk.WriteSlotFiles(dev, esp, plan.Slot, o.Image, *plan.Layout)
		if err == nil {
			err = ondisk.WriteRecord(dev, esp, rec)
		}
	} else {
		err = ondisk.WriteStart(dev, esp, o.Image, *plan.Layout, st)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	o.emit(Event{Kind: "phase", Phase: "partitioned"})
	return st, rec, esp, nil
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
	esp   ondisk.ESPWriter
	st    *ondisk.State
	rec   *ondisk.Record // the disk's record, when st is one of its slots
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
	if j.rec != nil {
		rec := *j.rec
		rec.Slots = map[string]*ondisk.State{}
		for k, v := range j.rec.Slots {
			rec.Slots[k] = v
		}
		rec.Slots[j.st.Slot] = &snap
		if err := ondisk.WriteRecord(j.dev, j.esp, &rec); err != nil {
			return err
		}
	} else if err := ondisk.WriteState(j.dev, j.esp, &snap); err != nil {
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
