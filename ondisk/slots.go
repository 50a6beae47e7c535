package ondisk

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
)

// RecordFormat is the state.json format of a disk with root slots: one
// record for the disk (table, active slot) holding each slot's journal.
// A disk deployed with one slot keeps format 1, the bare journal, so an
// older imprint still reads it.
const RecordFormat = 2

// Slot names, in disk order.
const (
	SlotA = "a"
	SlotB = "b"
)

// Record is state.json of a disk with root slots.
type Record struct {
	Format int           `json:"format"`
	Table  *layout.Table `json:"table"`
	// Active is the slot the boot menu starts by default; a sync writes
	// the other one and makes it active only when it completes.
	Active string `json:"active"`
	// Slots holds each slot's journal; a slot never written is absent.
	Slots map[string]*State `json:"slots"`
}

// Other is the slot that is not s.
func Other(s string) string {
	if s == SlotA {
		return SlotB
	}
	return SlotA
}

// SlotPartition is the partition a content partition of the image is
// written to in slot s: "root" in slot "a" is "root-a". Without a slot it
// is the content partition's own name.
func SlotPartition(name, slot string) string {
	if slot == "" {
		return name
	}
	return name + "-" + slot
}

// PartitionOf is the placed partition that holds content partition name
// for this journal's slot.
func (s *State) PartitionOf(name string) string { return SlotPartition(name, s.Slot) }

// SlotDir is where a slot's manifest, layout and signature live on the
// ESP; the one-slot record keeps them in StateDir itself.
func SlotDir(slot string) string {
	if slot == "" {
		return StateDir
	}
	return StateDir + "/slot-" + slot
}

// slotFiles names a slot's manifest, layout and signature files.
func slotFiles(slot string) (manifest, lay, sig string) {
	d := SlotDir(slot)
	manifest = path.Join(d, path.Base(ManifestFile))
	return manifest, path.Join(d, path.Base(LayoutFile)), manifest + image.SignatureSuffix
}

// Signature is where this slot's manifest signature is kept on the ESP.
func (s *Slot) SignatureFile() string {
	_, _, sig := slotFiles(s.Name)
	return sig
}

// readRecord reads a format-2 state.json into od: every slot with a
// journal, and the active one as od.Slot.
func readRecord(od *OnDisk, fat *disk.FAT, raw []byte) error {
	var rec Record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("%w: %s is damaged: %v", ErrNotDeployed, StateFile, err)
	}
	if rec.Table == nil || (rec.Active != SlotA && rec.Active != SlotB) || rec.Slots[rec.Active] == nil {
		return fmt.Errorf("%w: %s has no table or no active slot", ErrNotDeployed, StateFile)
	}
	od.Record = &rec
	names := make([]string, 0, len(rec.Slots))
	for n := range rec.Slots {
		if n != SlotA && n != SlotB {
			return fmt.Errorf("%w: %s names slot %q", ErrNotDeployed, StateFile, n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	od.Slots = nil
	for _, n := range names {
		st := rec.Slots[n]
		st.Table, st.Slot = rec.Table, n
		sl := &Slot{Name: n, State: st}
		if err := readSlotFiles(fat, sl); err != nil {
			if n == rec.Active {
				return err
			}
			// An inactive slot a sync had just begun: its journal is
			// there, its manifest not yet. It holds nothing to trust.
			sl.Problem = err
		}
		od.Slots = append(od.Slots, sl)
		if n == rec.Active {
			*od.Slot = *sl
			od.Slots[len(od.Slots)-1] = od.Slot
		}
	}
	return nil
}

// readSlotFiles reads a slot's manifest and layout from the ESP.
func readSlotFiles(fat *disk.FAT, sl *Slot) error {
	mf, lf, _ := slotFiles(sl.Name)
	mraw, err := fat.ReadFile(mf)
	if err != nil {
		return fmt.Errorf("%w: no %s on the ESP", ErrNotDeployed, mf)
	}
	if image.ID(mraw) != sl.State.ImageID {
		return fmt.Errorf("%w: %s has image id %s, the state names %s", ErrNotDeployed, mf, image.ID(mraw), sl.State.ImageID)
	}
	m, err := image.Parse(mraw)
	if err != nil {
		return err
	}
	sl.ManifestRaw, sl.Manifest = mraw, m
	if fat.Exists(lf) {
		lraw, err := fat.ReadFile(lf)
		if err != nil {
			return fmt.Errorf("%s: %w", lf, err)
		}
		l, err := layout.ParseJSON(lraw)
		if err != nil {
			return fmt.Errorf("%w: %s is damaged: %w", ErrNotDeployed, lf, err)
		}
		sl.Layout = &l
	}
	return nil
}

// WriteSlotFiles records what a slot is about to hold: its manifest, the
// layout and the signature (or the removal of an older one's). The
// journal naming them is written after, by WriteRecord.
func WriteSlotFiles(dev *disk.Disk, esp ESPWriter, slot string, img *image.Resolved, lay layout.Layout) error {
	mf, lf, sf := slotFiles(slot)
	if err := esp.WriteFile(mf, img.Raw); err != nil {
		return fmt.Errorf("write %s on the ESP: %w", mf, err)
	}
	lb, err := layout.MarshalJSON(lay)
	if err != nil {
		return err
	}
	if err := esp.WriteFile(lf, lb); err != nil {
		return fmt.Errorf("write %s on the ESP: %w", lf, err)
	}
	if img.Signature != nil {
		err = esp.WriteFile(sf, img.Signature)
	} else {
		err = esp.Remove(sf)
	}
	if err != nil {
		return fmt.Errorf("%s on the ESP: %w", sf, err)
	}
	return dev.Sync()
}

// WriteRecord replaces state.json of a disk with slots and syncs it. The
// slots' journals are written without their table (the record's).
func WriteRecord(dev *disk.Disk, esp ESPWriter, rec *Record) error {
	out := *rec
	out.Format = RecordFormat
	out.Slots = map[string]*State{}
	for n, st := range rec.Slots {
		c := *st
		c.Table, c.Slot = nil, ""
		out.Slots[n] = &c
	}
	b, err := json.MarshalIndent(&out, "", "  ")
	if err != nil {
		return err
	}
	if err := esp.WriteFile(StateFile, append(b, '\n')); err != nil {
		return fmt.Errorf("write %s on the ESP: %w", StateFile, err)
	}
	return dev.Sync()
}

// Inactive is the slot a sync writes; nil when the disk has no slots.
func (od *OnDisk) Inactive() string {
	if od.Record == nil {
		return ""
	}
	return Other(od.Record.Active)
}

// SlotNamed returns the record of slot n, nil when it was never written.
func (od *OnDisk) SlotNamed(n string) *Slot {
	for _, s := range od.Slots {
		if s.Name == n {
			return s
		}
	}
	return nil
}

// ESPWriter is where the record is written: the ESP on the disk
// (disk.FAT), or the mounted ESP of a running node (bootloader.DirFS),
// since raw writes under a mounted FAT corrupt it.
type ESPWriter interface {
	WriteFile(name string, data []byte) error
	Remove(name string) error
}

// ErrNoSlot says a disk has no slot of the name asked for, or nothing
// readable in it.
var ErrNoSlot = errors.New("no such root slot")

// UseSlot makes slot n the one od's Slot describes (what verify, serve and
// export read); "" keeps the active slot.
func (od *OnDisk) UseSlot(n string) error {
	if n == "" {
		return nil
	}
	if n != SlotA && n != SlotB {
		return fmt.Errorf("%w: slot %q: want a or b", ErrNoSlot, n)
	}
	if od.Record == nil {
		return fmt.Errorf("%w: slot %s: the disk has one root slot (deploy --slots 2 makes two)", ErrNoSlot, n)
	}
	sl := od.SlotNamed(n)
	if sl == nil {
		return fmt.Errorf("%w: slot %s was never written", ErrNoSlot, n)
	}
	if sl.Manifest == nil {
		return fmt.Errorf("%w: slot %s holds no readable image: %v", ErrNoSlot, n, sl.Problem)
	}
	od.Slot = sl
	return nil
}

// Active is the name of the active slot, "" on a disk with one slot.
func (od *OnDisk) Active() string {
	if od.Record == nil {
		return ""
	}
	return od.Record.Active
}

// OtherSlots lists the root slots of the disk at path, beside the active
// one, that hold a record (written, or being written).
func OtherSlots(path string) ([]string, error) {
	dev, err := disk.OpenDisk(path, disk.OpenOptions{})
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	od, err := ReadDisk(dev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []string
	for _, s := range od.Slots {
		if s.Name != od.Active() {
			out = append(out, s.Name)
		}
	}
	return out, nil
}
