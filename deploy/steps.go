package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/tmpdir"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
)

// A deploy is a chain of steps on an opened device: MakePlan decides the
// table (or a resume), then Target.Partition, Target.WriteContents,
// Target.InstallBoot and Target.Commit act on it. Deploy composes them for
// a whole disk; Sync (one inactive slot of a running disk) will compose
// the same steps with another plan.

// PlanOptions choose how MakePlan shapes the disk.
type PlanOptions struct {
	// Layout is the layout to place, already fitted to the image
	// (image.Manifest.FitLayout).
	Layout layout.Layout
	// Size is the size of a disk file that does not exist yet (dev nil).
	Size int64
	// Firmware is uefi, bios, both, or "" to pick by the target: both for
	// image files and removable disks, uefi for fixed disks and dual boot.
	Firmware string
	// NoBoot leaves out the BIOS boot partition a bios firmware needs.
	NoBoot bool
	// NoBIOSLoaders says the image carries no GRUB for legacy BIOS: a
	// default of both firmwares narrows to UEFI (Plan.Narrowed).
	NoBIOSLoaders bool
	// KeepExisting places the image beside the disk's partitions.
	KeepExisting bool
	// DiskName names the target in messages.
	DiskName string
	// AllowDowngrade lets an image replace a newer version of itself
	// (ondisk.CheckDowngrade).
	AllowDowngrade bool
	// Slots is 1 (one root), 2 (root slots a and b, which imprint sync
	// switches between) or 0: 2 where the disk has room, else 1.
	Slots int
	// SlotSize is the size of each root slot; 0 is DefaultSlotSize.
	SlotSize int64
}

// MakePlan decides what deploying img onto dev does. A disk that holds an
// interrupted deploy of the same image, with the table it recorded, is
// resumed; otherwise the layout is placed on the disk (or beside its
// partitions). dev nil plans a disk file of o.Size that is yet to be
// created, so a layout that does not fit is refused before the file
// exists. MakePlan writes nothing.
func MakePlan(dev *disk.Disk, img *image.Resolved, o PlanOptions) (*Plan, error) {
	m := img.Manifest
	lay := o.Layout
	plan := &Plan{Disk: o.DiskName, Image: m.Name + ":" + m.Version, ImageID: img.ID, Layout: &lay, Firmware: o.Firmware}
	if dev == nil {
		if o.KeepExisting {
			return nil, fmt.Errorf("--keep-existing: %s does not exist; it needs a disk that already has a GPT", o.DiskName)
		}
		if o.Size <= 0 {
			return nil, fmt.Errorf("%s does not exist; give --size to create an image file", o.DiskName)
		}
		plan.Create, plan.DiskSize = true, o.Size
		if plan.Firmware == "" {
			plan.Firmware = autoBoth(plan, o)
		}
		t, err := placeSlots(plan, m, withBIOSBoot(lay, plan.Firmware, o.NoBoot), o, o.Size, 512)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.DiskName, err)
		}
		plan.Table = t
		return plan, nil
	}
	plan.DiskSize, plan.Block = dev.Size(), dev.IsBlock()
	od, err := ondisk.ReadDisk(dev)
	if od != nil {
		plan.Destroyed = od.GPT
	}
	if err == nil && od.Interrupted(img.ID, dev.Size()) {
		plan.Resume, plan.Table, plan.Destroyed, plan.Layout = true, od.State.Table, nil, od.Layout
		if od.Record != nil {
			plan.Slots, plan.Slot = 2, od.State.Slot
		} else {
			plan.Slots = 1
		}
		for _, p := range m.Partitions {
			if od.State.Done[p.Name] == nil || od.State.Done[p.Name].Len() != len(p.Content.Chunks) {
				od.State.Done[p.Name] = copier.NewBitmap(len(p.Content.Chunks))
			}
		}
		if fw, ok := resumeFirmware(o.Firmware, od.State); ok {
			plan.Firmware = fw
			plan.resume = od
			return plan, nil
		}
		// The firmware asked for needs a BIOS boot partition the
		// interrupted run's table lacks: another plan, placed afresh.
		plan.Resume, plan.Table, plan.Destroyed, plan.Layout = false, nil, od.GPT, &lay
	}
	if err == nil && od.State.Status == ondisk.StatusComplete {
		if err := ondisk.CheckDowngrade(od.Manifest, m, o.AllowDowngrade); err != nil {
			return nil, fmt.Errorf("%s: %w", o.DiskName, err)
		}
	}
	if o.KeepExisting {
		if o.Slots == 2 {
			return nil, fmt.Errorf("--slots 2 with --keep-existing: root slots need the whole disk; use --slots 1 beside other systems")
		}
		plan.Slots = 1
		return planBeside(dev, plan, o)
	}
	if plan.Firmware == "" {
		plan.Firmware = bootloader.UEFI
		if !dev.IsBlock() || dev.Removable() {
			plan.Firmware = autoBoth(plan, o)
		}
	}
	t, err := placeSlots(plan, m, withBIOSBoot(lay, plan.Firmware, o.NoBoot), o, dev.Size(), dev.SectorSize())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.DiskName, err)
	}
	if _, ok := t.ByRole(layout.RoleESP); !ok {
		return nil, fmt.Errorf("%w: the layout has no ESP to keep imprint's state in", layout.ErrBadLayout)
	}
	plan.Table = t
	return plan, nil
}

// resumeFirmware is the firmware a resumed deploy boots on: the one asked
// for, else the one the interrupted run recorded in the journal, else (a
// journal from before it was recorded) what its table implies. ok is false
// when the firmware asked for needs a BIOS boot partition the recorded
// table does not have, so the disk cannot be resumed as asked.
func resumeFirmware(asked string, st *ondisk.State) (string, bool) {
	fw := asked
	if fw == "" {
		fw = st.Firmware
	}
	fw = firmware(fw, st.Table)
	if _, ok := st.Table.ByRole(layout.RoleBIOSBoot); !ok && fw != bootloader.UEFI {
		return fw, false
	}
	return fw, true
}

// autoBoth is the default of both firmwares, narrowed to UEFI when the
// image cannot boot on legacy BIOS.
func autoBoth(plan *Plan, o PlanOptions) string {
	if o.NoBIOSLoaders && !o.NoBoot {
		plan.Narrowed = true
		return bootloader.UEFI
	}
	return bootloader.Both
}

// planBeside plans a dual-boot deploy: every existing partition stays.
// The firmware default is UEFI only, since GRUB for BIOS would replace the
// MBR boot code another system may rely on.
func planBeside(dev *disk.Disk, plan *Plan, o PlanOptions) (*Plan, error) {
	guid, parts, err := disk.ReadGPT(dev)
	if err != nil {
		return nil, fmt.Errorf("--keep-existing: %s: %w", o.DiskName, err)
	}
	if plan.Firmware == "" {
		plan.Firmware = bootloader.UEFI
	}
	_, hasESP := layout.FindESP(parts)
	t, err := layout.PlaceBeside(withBIOSBoot(o.Layout, plan.Firmware, o.NoBoot), parts, guid, dev.Size(), dev.SectorSize(), hasESP)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.DiskName, err)
	}
	if _, ok := t.ByRole(layout.RoleESP); !ok {
		return nil, fmt.Errorf("%w: neither the disk nor the layout has an ESP to keep imprint's state in", layout.ErrBadLayout)
	}
	plan.Table, plan.Kept, plan.Destroyed = t, parts, nil
	return plan, nil
}

// Target is one deploy in progress on an opened device: what the steps
// after MakePlan share.
type Target struct {
	Dev   *disk.Disk
	Image *image.Resolved
	Plan  *Plan
	// ESP and State are set by Partition: the disk's record.
	ESP   *disk.FAT
	State *ondisk.State
	// Record is the disk's record when it has root slots (State is then
	// one of its slots); nil with one slot.
	Record *ondisk.Record
	// RecordTo, when set, is where the record is written instead of ESP:
	// the mounted ESP of a running node.
	RecordTo ondisk.ESPWriter
	// Events, when set, gets progress; calls must not overlap (Deploy
	// serialises them).
	Events func(Event)
	TmpDir string
}

func (t *Target) recordTo() ondisk.ESPWriter {
	if t.RecordTo != nil {
		return t.RecordTo
	}
	return t.ESP
}

func (t *Target) emit(e Event) {
	if t.Events != nil {
		t.Events(e)
	}
}

// Partition writes the plan's GPT, formats the ESP (unless kept) and the
// local partitions, and records the start of the deploy on the ESP: the
// manifest, its signature, the layout, then the state. For a resume it
// writes nothing and takes up the record already on the disk.
func (t *Target) Partition(ctx context.Context) error {
	if r := t.Plan.resume; r != nil {
		t.ESP, t.State, t.Record = r.ESP, r.State, r.Record
		t.State.Status = ondisk.StatusWriting
		// A journal from before the firmware was recorded gets it now,
		// with the next checkpoint.
		t.State.Firmware = t.Plan.Firmware
		return nil
	}
	st, rec, esp, err := partitionDisk(ctx, t, t.Plan)
	if err != nil {
		return err
	}
	t.ESP, t.State, t.Record = esp, st, rec
	return nil
}

// NewCopier gives the copier a deploy of img reads chunks through, from
// sources tried in order; warnings go to events. Close its Dec when done.
func NewCopier(sources []store.Source, img *image.Resolved, events func(Event)) (*copier.Copier, error) {
	cp := &copier.Copier{ChunkSize: img.Manifest.ChunkSize, Fetch: fetch.New(sources, fetch.Options{OnError: func(i int, _ string, err error) {
		if events != nil {
			events(Event{Kind: "warning", Message: fmt.Sprintf("source %d: %v; trying the next source", i+1, err)})
		}
	}})}
	var err error
	if cp.Dec, err = image.NewDecoder(); err != nil {
		return nil, err
	}
	return cp, nil
}

// WriteOptions tune WriteContents.
type WriteOptions struct {
	// Verify reads every partition back (past the page cache) after it is
	// written.
	Verify bool
	// CheckpointEvery is how often the journal is synced to the ESP.
	CheckpointEvery time.Duration
	// Swarm, when set, takes chunks from the image's swarm first.
	Swarm *SwarmOptions
	// Local, with Swarm, names the chunks the copier has on this disk
	// (a sync's other slot): they are written before the swarm phase,
	// so the swarm is asked only for what the node lacks.
	Local func(sum string) bool
}

// Written is what WriteContents did.
type Written struct {
	Written   int64 // bytes written now
	FromSwarm int64 // of which the swarm gave
	Skipped   int64 // bytes an earlier, interrupted run had written
	Verified  bool
}

// WriteContents writes every content partition of the image into its
// place in the table, journaled: chunks are marked in the state after a
// sync, so an interrupted run resumes where it stopped. With Verify, each
// partition is read back; chunks that differ are unmarked and the step
// fails with ErrVerify.
func (t *Target) WriteContents(ctx context.Context, cp *copier.Copier, o WriteOptions) (*Written, error) {
	m, st, dev := t.Image.Manifest, t.State, t.Dev
	res := &Written{}
	j := &journal{dev: dev, esp: t.recordTo(), st: st, rec: t.Record, every: o.CheckpointEvery, emit: t.emit}
	if o.Swarm != nil && o.Local != nil {
		n, err := t.writeLocal(ctx, cp, o.Local, j)
		if err != nil {
			return nil, err
		}
		// Counted below as already there; they were written now.
		res.Written, res.Skipped = n, -n
	}
	if o.Swarm != nil {
		n, copied, err := t.fromSwarm(ctx, o.Swarm, j)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			t.emit(Event{Kind: "warning", Message: fmt.Sprintf("swarm: %v; the rest comes from the sources", err)})
		}
		// Counted below as already there; they were written now.
		res.FromSwarm = n
		res.Written, res.Skipped = res.Written+n+copied, res.Skipped-n-copied
	}
	// What this run wrote, for a read-back that need not hash it again
	// (copier.Written).
	written := map[string]*copier.Written{}
	for _, p := range m.Partitions {
		placed, ok := st.Table.Find(st.PartitionOf(p.Name))
		if !ok {
			return nil, fmt.Errorf("partition %s is not in the disk's table", st.PartitionOf(p.Name))
		}
		bm := st.Done[p.Name]
		total := p.Content.Size
		var done, skipped int64
		var mu sync.Mutex
		t.emit(Event{Kind: "phase", Phase: "write", Partition: p.Name, Total: total})
		stop := j.start(ctx)
		written[p.Name] = copier.NewWritten()
		err := cp.Write(ctx, p.Content, target{disk.Section{D: dev, Off: placed.Start, Len: placed.Len}, dev, placed.Start}, copier.Hooks{
			Written: written[p.Name],
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
				t.emit(Event{Kind: "progress", Phase: "write", Partition: p.Name, Done: d, Total: total})
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
	if !o.Verify {
		return res, nil
	}
	for _, p := range m.Partitions {
		placed, _ := st.Table.Find(st.PartitionOf(p.Name))
		if err := dev.DropCache(placed.Start, p.Content.Size); err != nil {
			t.emit(Event{Kind: "warning", Message: fmt.Sprintf("could not drop the page cache before verifying: %v", err)})
		}
		t.emit(Event{Kind: "phase", Phase: "verify", Partition: p.Name, Total: p.Content.Size})
		var done int64
		var mu sync.Mutex
		bad, err := cp.VerifyWritten(ctx, p.Content, disk.Section{D: dev, Off: placed.Start, Len: placed.Len}, written[p.Name], func(n int64) {
			mu.Lock()
			done += n
			d := done
			mu.Unlock()
			t.emit(Event{Kind: "progress", Phase: "verify", Partition: p.Name, Done: d, Total: p.Content.Size})
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
	return res, nil
}

// InstallBoot puts the boot loader, the image's boot files and the menu
// on the disk (and GRUB for BIOS when the plan's firmware wants it).
func (t *Target) InstallBoot(ctx context.Context, cp *copier.Copier, b BootOptions) error {
	t.emit(Event{Kind: "phase", Phase: "bootloader"})
	b.Firmware = t.Plan.Firmware
	o := Options{Image: t.Image, Boot: b, Events: t.Events, TmpDir: t.TmpDir}
	if err := installBoot(ctx, o, cp, t.Dev, t.ESP, t.State, !t.Plan.kept(espGUID(t.State.Table))); err != nil {
		return fmt.Errorf("boot loader: %w", err)
	}
	return t.Dev.Sync()
}

// Commit records the deploy complete, last, after everything it vouches
// for is synced.
func (t *Target) Commit(verified bool) error {
	now := time.Now().UTC()
	t.State.Status, t.State.Completed, t.State.Verified, t.State.Done = ondisk.StatusComplete, &now, verified, nil
	j := &journal{dev: t.Dev, esp: t.recordTo(), st: t.State, rec: t.Record, emit: t.emit}
	if err := j.checkpoint(); err != nil {
		return err
	}
	if err := t.Dev.RereadPartitions(); err != nil {
		t.emit(Event{Kind: "warning", Message: err.Error()})
	}
	return nil
}

// Deploy deploys o.Image onto the whole disk o.Disk: MakePlan, Partition,
// WriteContents, InstallBoot, Commit.
func Deploy(ctx context.Context, o Options) (*Result, error) {
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
	lay := o.Image.DefaultLayout()
	if o.Layout != nil {
		lay = *o.Layout
	}
	lay, err := m.FitLayout(lay)
	if err != nil {
		return nil, fmt.Errorf("image %s:%s: %w", m.Name, m.Version, err)
	}
	po := PlanOptions{Layout: lay, Size: o.Size, Firmware: o.Boot.Firmware, NoBoot: o.Boot.Skip, NoBIOSLoaders: !hasBIOSLoaders(m),
		KeepExisting: o.KeepExisting, DiskName: o.Disk, AllowDowngrade: o.AllowDowngrade, Slots: o.Slots, SlotSize: o.SlotSize}
	plan, dev, err := openAndPlan(o, po)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		defer dev.Close()
	}
	if plan.Narrowed {
		o.emit(Event{Kind: "warning", Message: fmt.Sprintf("the image carries no GRUB for legacy BIOS (%s, %s): the disk boots under UEFI only", image.LoaderGrubBIOSBoot, image.LoaderGrubBIOSCore)})
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
	t := &Target{Dev: dev, Image: o.Image, Plan: plan, Events: o.Events, TmpDir: o.TmpDir}
	if err := t.Partition(ctx); err != nil {
		return nil, err
	}
	if o.Live != nil {
		live, err := ondisk.OpenLive(o.Disk, o.Image, plan.Layout, t.State, t.State.Done)
		if err != nil {
			return nil, fmt.Errorf("serve while deploying: %w", err)
		}
		o.Live(live)
	}
	cp, err := NewCopier(o.Sources, o.Image, o.Events)
	if err != nil {
		return nil, err
	}
	defer cp.Dec.Close()
	w, err := t.WriteContents(ctx, cp, WriteOptions{Verify: o.Verify, CheckpointEvery: o.CheckpointEvery, Swarm: o.Swarm})
	if err != nil {
		return nil, err
	}
	if !o.Boot.Skip {
		if err := t.InstallBoot(ctx, cp, o.Boot); err != nil {
			return nil, err
		}
	}
	if err := t.Commit(w.Verified); err != nil {
		return nil, err
	}
	res := &Result{Plan: plan, Written: w.Written, Skipped: w.Skipped, Verified: w.Verified, Elapsed: time.Since(start), BytesFrom: cp.BytesFrom(), FromSwarm: w.FromSwarm}
	o.emit(Event{Kind: "complete", Message: fmt.Sprintf("image %s:%s (%s) deployed to %s", m.Name, m.Version, o.Image.ID, o.Disk)})
	return res, nil
}

// openAndPlan opens (or, for a new image file, plans then creates) the
// disk and makes the plan. A dry run opens read-only and creates nothing.
func openAndPlan(o Options, po PlanOptions) (*Plan, *disk.Disk, error) {
	_, statErr := os.Stat(o.Disk)
	create := errors.Is(statErr, os.ErrNotExist)
	if create {
		plan, err := MakePlan(nil, o.Image, po)
		if err == nil {
			// Before the file is created, so a refusal leaves none.
			err = planLoaders(o, plan)
		}
		if err != nil || o.DryRun {
			return plan, nil, err
		}
	}
	dev, err := disk.OpenDisk(o.Disk, disk.OpenOptions{Write: !o.DryRun, Create: true, Size: o.Size})
	if err != nil {
		return nil, nil, err
	}
	plan, err := MakePlan(dev, o.Image, po)
	if err == nil {
		// Before anything is written: a boot setup the image has no
		// loader for is refused, not found out after the copy.
		err = planLoaders(o, plan)
	}
	if err != nil {
		dev.Close()
		return nil, nil, err
	}
	plan.Create = create
	return plan, dev, nil
}

// planLoaders checks that the image carries every loader the plan's boot
// setup needs.
func planLoaders(o Options, plan *Plan) error {
	if o.Boot.Skip {
		return nil
	}
	b := o.Boot
	b.Firmware = plan.Firmware
	if err := checkLoaders(o.Image.Manifest, b, plan.Table); err != nil {
		return fmt.Errorf("boot loader: %w", err)
	}
	return nil
}
