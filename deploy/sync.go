package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
)

// Errors a sync is refused with before anything is written.
var (
	// ErrOneSlot says the disk has no root slots to sync between.
	ErrOneSlot = errors.New("the disk has one root slot: imprint sync needs two (deploy --slots 2)")
	// ErrDowngrade says the image is older than the one the disk runs
	// (image.Later, the rule deploy checks too).
	ErrDowngrade = ondisk.ErrDowngrade
	// ErrSlotMismatch says the image does not fit the disk's slots.
	ErrSlotMismatch = errors.New("the image does not fit the disk's root slots")
)

// DefaultTries is how many boots a newly synced version gets to reach
// boot-complete before the loader sorts it after the previous one.
const DefaultTries = 3

// SyncOptions configure one sync.
type SyncOptions struct {
	// Sources give the chunks the disk does not hold, tried in order.
	Sources []store.Source
	Image   *image.Resolved
	Disk    string
	Trust   *image.Trust
	DryRun  bool
	// AllowDowngrade writes an image whose version sorts before the
	// active one's.
	AllowDowngrade bool
	// Verify reads the written chunks' partitions back.
	Verify bool
	Events func(Event)
	TmpDir string
	// CheckpointEvery is how often the journal is synced to the ESP.
	CheckpointEvery time.Duration
	// Tries is the boot counter of the new entry (0: DefaultTries).
	Tries int
	// ESPDir is where the disk's ESP is mounted on a running node: the
	// boot files, the menu and the record are then written through the
	// mounted filesystem, never raw under it. "" writes the ESP raw.
	ESPDir string
	// RunningRoot is the PARTUUID of the root the machine runs from, when
	// it runs from this disk: that partition is never written.
	RunningRoot string
	// Swarm, when set, takes the chunks the disk lacks from the image's
	// swarm first; those it holds are still read from the disk.
	Swarm *SwarmOptions
}

// SyncPlan is what a sync will do.
type SyncPlan struct {
	Disk    string `json:"disk"`
	Image   string `json:"image"`
	ImageID string `json:"image_id"`
	// Active is the slot the disk boots now (and keeps untouched), Slot
	// the one written.
	Active        string `json:"active"`
	ActiveImage   string `json:"active_image"`
	Slot          string `json:"slot"`
	Resume        bool   `json:"resume"`
	UpToDate      bool   `json:"up_to_date"`
	Total         int64  `json:"bytes_total"`
	InPlace       int64  `json:"bytes_in_place"`
	Local         int64  `json:"bytes_local"`
	ToFetch       int64  `json:"bytes_to_fetch"`
	ChunksToFetch int    `json:"chunks_to_fetch"`
}

// SourceBytes is what one source gave: raw bytes and as stored (compressed).
type SourceBytes struct {
	Source string `json:"source"`
	Raw    int64  `json:"raw"`
	Stored int64  `json:"stored"`
}

// SyncResult is what a finished sync reports.
type SyncResult struct {
	Plan *SyncPlan `json:"plan"`
	// InPlace bytes were already in the slot, Local bytes were read from
	// the disk (either slot) and checked, Fetched bytes came from the
	// sources (FetchedStored as they were sent).
	InPlace       int64         `json:"bytes_in_place"`
	Resumed       int64         `json:"bytes_resumed"`
	Local         int64         `json:"bytes_local"`
	Fetched       int64         `json:"bytes_fetched"`
	FetchedStored int64         `json:"bytes_fetched_stored"`
	FromSwarm     int64         `json:"bytes_from_swarm"`
	From          []SourceBytes `json:"from"`
	Pruned        []string      `json:"pruned_versions,omitempty"`
	Elapsed       time.Duration `json:"elapsed_ns"`
}

// Sync writes o.Image into the inactive root slot of o.Disk, taking every
// chunk the disk already holds from the disk, then puts its boot files and
// (last) its boot entry, with a try counter, on the ESP. The active slot
// and every partition but the inactive slot's are never written; until the
// entry is written the menu boots the active slot only. A sync killed at
// any point is resumed by running it again.
func Sync(ctx context.Context, o SyncOptions) (*SyncResult, error) {
	start := time.Now()
	if ev := o.Events; ev != nil {
		var mu sync.Mutex
		o.Events = func(e Event) {
			mu.Lock()
			defer mu.Unlock()
			ev(e)
		}
	}
	emit := func(e Event) {
		if o.Events != nil {
			o.Events(e)
		}
	}
	if err := o.Trust.Check(o.Image); err != nil {
		return nil, err
	}
	if o.Tries < 0 || o.Tries > bootloader.MaxTries {
		return nil, fmt.Errorf("--tries %d: want 1 to %d", o.Tries, bootloader.MaxTries)
	}
	dev, err := disk.OpenDisk(o.Disk, disk.OpenOptions{Write: !o.DryRun})
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	od, err := ondisk.ReadDisk(dev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Disk, err)
	}
	if od.Record == nil {
		return nil, fmt.Errorf("%s: %w", o.Disk, ErrOneSlot)
	}
	// The menu decides what boots (boot counting, imprint rollback): the
	// slot it boots next is the one to keep, whatever the record said.
	recorded := od.Record.Active
	if menu, err := bootloader.ReadMenu(od.ESP); err == nil {
		if order := menu.SlotOrder(); len(order) > 0 && order[0].Slot != od.Record.Active {
			if next := od.SlotNamed(order[0].Slot); next != nil && next.Manifest != nil && next.State.Status == ondisk.StatusComplete {
				od.Slot, od.Record.Active = next, next.Name
			}
		}
	}
	if od.State.Status != ondisk.StatusComplete {
		return nil, fmt.Errorf("%s: the active slot %s holds an unfinished deploy of %s:%s: finish it with imprint deploy first", o.Disk, od.Record.Active, od.State.Name, od.State.Version)
	}
	m, am := o.Image.Manifest, od.Manifest
	plan := &SyncPlan{Disk: o.Disk, Image: m.Name + ":" + m.Version, ImageID: o.Image.ID, Active: od.Record.Active,
		ActiveImage: am.Name + ":" + am.Version, Slot: od.Inactive()}
	if err := checkSlots(o, od, plan.Slot); err != nil {
		return nil, err
	}
	if o.Image.ID == od.State.ImageID {
		plan.UpToDate = true
		if od.Record.Active != recorded && !o.DryRun {
			if err := ondisk.WriteRecord(dev, espWriter(o, od), od.Record); err != nil {
				return nil, err
			}
		}
		emit(Event{Kind: "complete", Message: fmt.Sprintf("%s already runs %s from slot %s", o.Disk, plan.Image, plan.Active)})
		return &SyncResult{Plan: plan, Elapsed: time.Since(start)}, nil
	}
	if m.Version == am.Version {
		return nil, fmt.Errorf("image %s (id %s) has the version of the active slot's image but another id (%s): give the new build a new version", plan.Image, o.Image.ID, od.State.ImageID)
	}
	if err := ondisk.CheckDowngrade(am, m, o.AllowDowngrade); err != nil {
		return nil, fmt.Errorf("slot %s: %w", plan.Active, err)
	}
	slot := plan.Slot
	prev := od.Record.Slots[slot]
	st := &ondisk.State{Format: 1, ImageID: o.Image.ID, Name: m.Name, Version: m.Version, Status: ondisk.StatusWriting,
		Started: time.Now().UTC(), Table: od.Record.Table, Slot: slot, Done: map[string]*copier.Bitmap{}}
	complete := prev != nil && prev.ImageID == o.Image.ID && prev.Status == ondisk.StatusComplete
	switch {
	case complete:
		plan.Resume = true
		*st = *prev
	case prev != nil && prev.ImageID == o.Image.ID:
		plan.Resume = true
		st.Started = prev.Started
		for _, p := range m.Partitions {
			if bm := prev.Done[p.Name]; bm != nil && bm.Len() == len(p.Content.Chunks) {
				st.Done[p.Name] = bm
			}
		}
	}
	for _, p := range m.Partitions {
		if st.Done[p.Name] == nil && !complete {
			st.Done[p.Name] = copier.NewBitmap(len(p.Content.Chunks))
		}
	}
	local := newLocalSource(dev, od)
	if !complete {
		if !plan.Resume {
			plan.InPlace = markInPlace(od.SlotNamed(slot), m, st)
		} else {
			plan.InPlace = countDone(m, st)
		}
		local.addDone(m, st)
		for _, p := range m.Partitions {
			plan.Total += p.Content.Size
			for i, sum := range p.Content.Chunks {
				if st.Done[p.Name].Has(i) || sum == image.ZeroChunk {
					continue
				}
				if local.has(sum) {
					plan.Local += p.Content.ChunkLen(i, m.ChunkSize)
				} else {
					plan.ToFetch += p.Content.ChunkLen(i, m.ChunkSize)
					plan.ChunksToFetch++
				}
			}
		}
	}
	emit(Event{Kind: "sync-plan", Message: fmt.Sprintf("%s into slot %s", plan.Image, slot)})
	res := &SyncResult{Plan: plan}
	if o.DryRun {
		return res, nil
	}
	esp, recTo := bootloader.FS(od.ESP), espWriter(o, od)
	if o.ESPDir != "" {
		esp = bootloader.DirFS(o.ESPDir)
	}
	rec := od.Record
	// Before a byte of the slot changes: no entry may boot it, and the
	// record says it is being written (with the chunks already in place).
	rootP, err := m.RootPartition()
	if err != nil {
		return nil, err
	}
	slotRoot, _ := rec.Table.Find(ondisk.SlotPartition(rootP.Name, slot))
	if err := bootloader.RemoveSlotEntry(esp, slot, slotRoot.GUID, rec.Active); err != nil && !errors.Is(err, bootloader.ErrNoMenu) {
		return nil, fmt.Errorf("boot menu: %w", err)
	}
	emit(Event{Kind: "phase", Phase: "menu-without-slot"})
	rec.Slots[slot] = st
	if err := ondisk.WriteRecord(dev, recTo, rec); err != nil {
		return nil, err
	}
	emit(Event{Kind: "phase", Phase: "slot-record"})
	lay, err := m.FitLayout(o.Image.DefaultLayout())
	if err != nil {
		lay = o.Image.DefaultLayout() // only recorded, for export
	}
	if err := ondisk.WriteSlotFiles(dev, recTo, slot, o.Image, lay); err != nil {
		return nil, err
	}
	emit(Event{Kind: "phase", Phase: "slot-files"})
	srcs := []store.Source{local}
	counts := make([]*atomic.Int64, len(o.Sources))
	for i, s := range o.Sources {
		counts[i] = new(atomic.Int64)
		srcs = append(srcs, counted{s, counts[i]})
	}
	cp, err := NewCopier(srcs, o.Image, o.Events)
	if err != nil {
		return nil, err
	}
	defer cp.Dec.Close()
	t := &Target{Dev: dev, Image: o.Image, Plan: &Plan{Disk: o.Disk, Table: rec.Table, Slots: 2, Slot: slot}, ESP: od.ESP, State: st, Record: rec, RecordTo: recTo, Events: o.Events, TmpDir: o.TmpDir}
	if !complete {
		w, err := t.WriteContents(ctx, cp, WriteOptions{Verify: o.Verify, CheckpointEvery: o.CheckpointEvery, Swarm: o.Swarm, Local: local.has})
		if err != nil {
			return nil, err
		}
		res.FromSwarm = w.FromSwarm
		res.Resumed = w.Skipped - plan.InPlace
		now := time.Now().UTC()
		st.Status, st.Completed, st.Verified, st.Done = ondisk.StatusComplete, &now, w.Verified, nil
		if err := ondisk.WriteRecord(dev, recTo, rec); err != nil {
			return nil, err
		}
		emit(Event{Kind: "phase", Phase: "slot-complete"})
	}
	res.InPlace = plan.InPlace
	emit(Event{Kind: "phase", Phase: "bootloader"})
	downgrade := image.Later(am.Created, am.Version, m.Created, m.Version)
	if err := syncBoot(ctx, o, cp, esp, st, downgrade); err != nil {
		return nil, fmt.Errorf("boot loader: %w", err)
	}
	if err := dev.Sync(); err != nil {
		return nil, err
	}
	emit(Event{Kind: "phase", Phase: "entry"})
	rec.Active = slot
	if err := ondisk.WriteRecord(dev, recTo, rec); err != nil {
		return nil, err
	}
	emit(Event{Kind: "phase", Phase: "active"})
	if res.Pruned, err = bootloader.PruneKernels(esp, am.Version, m.Version); err != nil {
		emit(Event{Kind: "warning", Message: fmt.Sprintf("pruning old boot files: %v", err)})
	}
	if err := dev.Sync(); err != nil {
		return nil, err
	}
	from := cp.BytesFrom()
	res.Local = from[0]
	for i, s := range o.Sources {
		sb := SourceBytes{Source: fmt.Sprint(s), Raw: from[i+1], Stored: counts[i].Load()}
		res.From = append(res.From, sb)
		res.Fetched += sb.Raw
		res.FetchedStored += sb.Stored
	}
	res.Elapsed = time.Since(start)
	emit(Event{Kind: "complete", Message: fmt.Sprintf("image %s (%s) synced into slot %s of %s; it boots next", plan.Image, o.Image.ID, slot, o.Disk)})
	return res, nil
}

// espWriter is where the record goes: through the mounted ESP when there
// is one, raw otherwise.
func espWriter(o SyncOptions, od *ondisk.OnDisk) ondisk.ESPWriter {
	if o.ESPDir != "" {
		return bootloader.DirFS(o.ESPDir)
	}
	return od.ESP
}

// checkSlots refuses an image that does not fit the disk's slots, and a
// slot the machine runs from, before anything is written.
func checkSlots(o SyncOptions, od *ondisk.OnDisk, slot string) error {
	m, t := o.Image.Manifest, od.Record.Table
	for _, p := range m.Partitions {
		name := ondisk.SlotPartition(p.Name, slot)
		placed, ok := t.Find(name)
		if !ok {
			return fmt.Errorf("%w: image %s:%s has partition %q, the disk has no slot partition %q for it", ErrSlotMismatch, m.Name, m.Version, p.Name, name)
		}
		if placed.Type != p.Type {
			return fmt.Errorf("%w: partition %q of image %s:%s is of type %s, slot %s is %s (an image for another architecture?)", ErrSlotMismatch, p.Name, m.Name, m.Version, layout.TypeName(p.Type), name, layout.TypeName(placed.Type))
		}
		if p.Content.Size > placed.Len {
			return fmt.Errorf("%w: partition %q of image %s:%s is %s, slot %s holds %s: redeploy with a larger --slot-size", ErrSlotMismatch, p.Name, m.Name, m.Version, layout.HumanSize(p.Content.Size), name, layout.HumanSize(placed.Len))
		}
		if o.RunningRoot != "" && strings.EqualFold(placed.GUID, o.RunningRoot) {
			return fmt.Errorf("the machine runs from %s (PARTUUID %s), the slot a sync would write: boot the active slot %s first", name, strings.ToLower(placed.GUID), od.Record.Active)
		}
	}
	for _, pl := range t.Partitions {
		if pl.Role != layout.RoleImage || !strings.HasSuffix(pl.Name, "-"+slot) {
			continue
		}
		if _, ok := m.Partition(strings.TrimSuffix(pl.Name, "-"+slot)); !ok {
			return fmt.Errorf("%w: the disk's slot partition %q has no content in image %s:%s", ErrSlotMismatch, pl.Name, m.Name, m.Version)
		}
	}
	if od.ESP == nil {
		return fmt.Errorf("%s: no ESP", o.Disk)
	}
	return nil
}

// markInPlace marks the chunks the slot already holds at the same place
// (its last record, complete or the chunks a killed sync wrote) and
// returns their bytes.
func markInPlace(old *ondisk.Slot, m *image.Manifest, st *ondisk.State) int64 {
	if old == nil || old.Manifest == nil || old.Manifest.ChunkSize != m.ChunkSize {
		return 0
	}
	var n int64
	for _, p := range m.Partitions {
		op, ok := old.Manifest.Partition(p.Name)
		if !ok || op.Content == nil {
			continue
		}
		done := old.State.Done[p.Name]
		for i, sum := range p.Content.Chunks {
			if i >= len(op.Content.Chunks) || op.Content.Chunks[i] != sum || op.Content.ChunkLen(i, m.ChunkSize) != p.Content.ChunkLen(i, m.ChunkSize) {
				continue
			}
			if old.State.Status != ondisk.StatusComplete && (done == nil || !done.Has(i)) {
				continue
			}
			st.Done[p.Name].Set(i)
			n += p.Content.ChunkLen(i, m.ChunkSize)
		}
	}
	return n
}

func countDone(m *image.Manifest, st *ondisk.State) int64 {
	var n int64
	for _, p := range m.Partitions {
		for i := range p.Content.Chunks {
			if st.Done[p.Name].Has(i) {
				n += p.Content.ChunkLen(i, m.ChunkSize)
			}
		}
	}
	return n
}

// syncBoot puts the new version's kernel files on the ESP, then its entry
// for the slot, with a try counter, as the default.
func syncBoot(ctx context.Context, o SyncOptions, cp *copier.Copier, esp bootloader.FS, st *ondisk.State, downgrade bool) error {
	m := o.Image.Manifest
	if m.Boot == nil || m.Boot.Kernel == nil {
		return fmt.Errorf("image %s:%s has no kernel: a synced slot could not boot", m.Name, m.Version)
	}
	kdir := bootloader.KernelDir(m.Version)
	for _, f := range []struct {
		c    *image.Content
		name string
	}{{m.Boot.Kernel, "vmlinuz"}, {m.Boot.Initrd, "initrd.img"}, {m.Boot.Agent, "agent.img"}} {
		if f.c == nil {
			continue
		}
		b, err := cp.ReadContent(ctx, f.c)
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		if err := esp.WriteFile(path.Join(kdir, f.name), b); err != nil {
			return fmt.Errorf("write %s on the ESP: %w", path.Join(kdir, f.name), err)
		}
		if o.Events != nil {
			o.Events(Event{Kind: "phase", Phase: "boot-file", Message: f.name})
		}
	}
	rp, err := m.RootPartition()
	if err != nil {
		return err
	}
	root, _ := st.Table.Find(st.PartitionOf(rp.Name))
	tries := o.Tries
	if tries == 0 {
		tries = DefaultTries
	}
	return bootloader.WriteSlotEntry(esp, bootloader.SlotEntry{Slot: st.Slot, Name: m.Name, Version: m.Version, Initrd: m.Boot.Initrd != nil,
		Agent: m.Boot.Agent != nil, RootPARTUUID: root.GUID, Cmdline: m.Boot.Cmdline, Tries: tries, Downgrade: downgrade})
}

// counted counts the stored bytes a source sends.
type counted struct {
	store.Source
	n *atomic.Int64
}

func (c counted) Chunk(ctx context.Context, sum string) ([]byte, error) {
	b, err := c.Source.Chunk(ctx, sum)
	if err == nil {
		c.n.Add(int64(len(b)))
	}
	return b, err
}

func (c counted) String() string { return fmt.Sprint(c.Source) }

// localSource gives the chunks the disk already holds: every chunk of the
// active slot, and those of the slot being written that are done. Each is
// read and its SHA-256 checked here; a place that no longer holds what the
// record says is passed over, so a wrong record costs a fetch, never bad
// data.
type localSource struct {
	dev    *disk.Disk
	chunks map[string][]localLoc
	// files are chunks of boot files already on the ESP, checked when read.
	files map[string][]byte
}

type localLoc struct{ off, n int64 }

func newLocalSource(dev *disk.Disk, od *ondisk.OnDisk) *localSource {
	s := &localSource{dev: dev, chunks: map[string][]localLoc{}, files: map[string][]byte{}}
	m := od.Manifest
	for _, p := range m.Partitions {
		if placed, ok := od.State.Table.Find(od.State.PartitionOf(p.Name)); ok && p.Content != nil {
			s.add(p.Content, m.ChunkSize, placed.Start, nil)
		}
	}
	// The active version's boot files: a new version with the same kernel
	// fetches none of it.
	if b := m.Boot; b != nil && od.ESP != nil {
		for _, f := range []struct {
			c    *image.Content
			name string
		}{{b.Kernel, "vmlinuz"}, {b.Initrd, "initrd.img"}, {b.Agent, "agent.img"}} {
			if f.c == nil {
				continue
			}
			data, err := od.ESP.ReadFile(path.Join(bootloader.KernelDir(m.Version), f.name))
			if err != nil || int64(len(data)) != f.c.Size {
				continue
			}
			for i, sum := range f.c.Chunks {
				off := int64(i) * m.ChunkSize
				s.files[sum] = data[off : off+f.c.ChunkLen(i, m.ChunkSize)]
			}
		}
	}
	return s
}

func (s *localSource) add(c *image.Content, chunkSize, base int64, keep func(int) bool) {
	for i, sum := range c.Chunks {
		if sum == image.ZeroChunk || (keep != nil && !keep(i)) {
			continue
		}
		s.chunks[sum] = append(s.chunks[sum], localLoc{base + int64(i)*chunkSize, c.ChunkLen(i, chunkSize)})
	}
}

// addDone adds the chunks of the slot being written that are there.
func (s *localSource) addDone(m *image.Manifest, st *ondisk.State) {
	for _, p := range m.Partitions {
		if placed, ok := st.Table.Find(st.PartitionOf(p.Name)); ok {
			bm := st.Done[p.Name].Clone()
			s.add(p.Content, m.ChunkSize, placed.Start, bm.Has)
		}
	}
}

func (s *localSource) has(sum string) bool { return len(s.chunks[sum]) > 0 || s.files[sum] != nil }

func (s *localSource) String() string { return "this disk" }

func (s *localSource) Chunk(ctx context.Context, sum string) ([]byte, error) {
	for _, l := range s.chunks[sum] {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b := make([]byte, l.n)
		if _, err := s.dev.ReadAt(b, l.off); err != nil {
			continue
		}
		h := sha256.Sum256(b)
		if hex.EncodeToString(h[:]) == sum {
			return image.RawFrame(b), nil
		}
	}
	if b := s.files[sum]; b != nil {
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) == sum {
			return image.RawFrame(b), nil
		}
	}
	return nil, fmt.Errorf("chunk %s: %w", sum, store.ErrNotFound)
}

func (s *localSource) Index(context.Context) (*store.Index, error) {
	return nil, fmt.Errorf("index: %w", store.ErrNotFound)
}

func (s *localSource) Manifest(_ context.Context, name, version string) ([]byte, error) {
	return nil, fmt.Errorf("image %s:%s: %w", name, version, store.ErrNotFound)
}

func (s *localSource) Signature(_ context.Context, name, version string) ([]byte, error) {
	return nil, fmt.Errorf("image %s:%s: %w", name, version, store.ErrNotFound)
}
