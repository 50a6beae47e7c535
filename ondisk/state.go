// Package ondisk owns the record a deployed disk carries about itself
// (imprint/ on its ESP: manifest, layout, journal; per slot, one today),
// and what is built on it: reading it back, verify, serving the disk as a
// source (DiskSource), export.
package ondisk

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
)

// Files imprint keeps on a deployed disk's ESP.
const (
	StateDir     = "imprint"
	ManifestFile = StateDir + "/manifest.json"
	StateFile    = StateDir + "/state.json"
	// LayoutFile is the layout the disk was partitioned from: the store's
	// default or the deploy's --layout. It is not part of the image id.
	LayoutFile = StateDir + "/layout.json"
	// LoadersDir holds every loader binary of the image, as the manifest
	// names them (before any per-disk patch).
	LoadersDir = StateDir + "/loaders"
)

// Status of a deploy as recorded on the disk.
const (
	StatusWriting  = "writing"
	StatusComplete = "complete"
)

// State is the journal of a deploy, kept on the ESP. Chunks are marked done
// only after the data was synced, so a resumed deploy can trust the marks.
type State struct {
	Format    int           `json:"format"`
	ImageID   string        `json:"image_id"`
	Name      string        `json:"name"`
	Version   string        `json:"version"`
	Status    string        `json:"status"`
	Started   time.Time     `json:"started"`
	Completed *time.Time    `json:"completed,omitempty"`
	Verified  bool          `json:"verified"`
	Table     *layout.Table `json:"table"`
	// Firmware is what the deploy makes the disk boot on (uefi, bios or
	// both), so a resumed deploy boots the way the interrupted one
	// planned; the table alone cannot say (a kept or layout-given BIOS
	// boot partition does not mean GRUB belongs in the MBR). Empty in
	// journals written before it was recorded.
	Firmware string                    `json:"firmware,omitempty"`
	Done     map[string]*copier.Bitmap `json:"done,omitempty"`
	// Slot is the root slot this journal is of ("a", "b"), "" on a disk
	// with one slot. It is the key of the record's slots, not stored.
	Slot string `json:"-"`
}

// ErrNotDeployed says a disk carries no imprint state.
var ErrNotDeployed = errors.New("not a disk deployed by imprint")

// OnDisk is what a deployed disk says about itself: its GPT, its ESP and
// the record of each image slot on it. Today a disk holds one slot (the
// whole-disk deploy); with root slots a and b it will hold two, and the
// embedded Slot is the one the record names current.
type OnDisk struct {
	GPT      []layout.GPTPartition
	DiskGUID string
	ESP      *disk.FAT
	// Slots lists every slot's record: one, or the written ones of a and b.
	Slots []*Slot
	// Record is state.json of a disk with root slots; nil with one slot.
	Record *Record
	// Slot is the current slot; never nil, its fields are nil when the
	// disk carries no (readable) record.
	*Slot
}

// Slot is the record of one image written onto a disk: its manifest, the
// layout it was placed from, and the deploy journal.
type Slot struct {
	// Name is "a" or "b"; "" on a disk with one slot.
	Name        string
	State       *State
	ManifestRaw []byte
	Manifest    *image.Manifest
	// Layout is the layout the disk was partitioned from; nil on a disk
	// deployed before layouts were recorded.
	Layout *layout.Layout
	// Problem says why an inactive slot's manifest could not be read (a
	// sync that had just begun); its Manifest is then nil.
	Problem error
}

// ReadDisk reads the GPT, the ESP and imprint's record from a target.
func ReadDisk(dev disk.Device) (*OnDisk, error) {
	guid, parts, err := disk.ReadGPT(dev)
	if err != nil {
		return nil, err
	}
	cur := &Slot{}
	od := &OnDisk{GPT: parts, DiskGUID: guid, Slot: cur}
	esp, ok := layout.FindESP(parts)
	if !ok {
		return od, fmt.Errorf("%w: no EFI System Partition", ErrNotDeployed)
	}
	fat, err := disk.OpenFAT(dev, esp.Start, esp.Len)
	if err != nil {
		return od, fmt.Errorf("%w: %v", ErrNotDeployed, err)
	}
	od.ESP = fat
	raw, err := fat.ReadFile(StateFile)
	if err != nil {
		return od, fmt.Errorf("%w: no %s on the ESP", ErrNotDeployed, StateFile)
	}
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		return od, fmt.Errorf("%w: %s is damaged: %v", ErrNotDeployed, StateFile, err)
	}
	if st.Format == RecordFormat {
		if err := readRecord(od, fat, raw); err != nil {
			return od, err
		}
		return od, nil
	}
	if st.Format != 1 || st.Table == nil {
		return od, fmt.Errorf("%w: %s has an unknown format", ErrNotDeployed, StateFile)
	}
	cur.State = &st
	mraw, err := fat.ReadFile(ManifestFile)
	if err != nil {
		return od, fmt.Errorf("%w: no %s on the ESP", ErrNotDeployed, ManifestFile)
	}
	if image.ID(mraw) != st.ImageID {
		return od, fmt.Errorf("%w: %s has image id %s, the state names %s", ErrNotDeployed, ManifestFile, image.ID(mraw), st.ImageID)
	}
	m, err := image.Parse(mraw)
	if err != nil {
		return od, err
	}
	cur.ManifestRaw, cur.Manifest = mraw, m
	if fat.Exists(LayoutFile) {
		lraw, err := fat.ReadFile(LayoutFile)
		if err != nil {
			return od, fmt.Errorf("%s: %w", LayoutFile, err)
		}
		l, err := layout.ParseJSON(lraw)
		if err != nil {
			return od, fmt.Errorf("%w: %s is damaged: %w", ErrNotDeployed, LayoutFile, err)
		}
		cur.Layout = &l
	}
	od.Slots = []*Slot{cur}
	return od, nil
}

// Interrupted reports whether the disk holds an unfinished deploy of image
// id that a deploy can resume: same disk size, and the table it recorded
// is still what the GPT holds.
func (od *OnDisk) Interrupted(id string, diskSize int64) bool {
	st := od.State
	return st != nil && st.ImageID == id && st.Status != StatusComplete &&
		st.Table.DiskSize == diskSize && tableMatches(st.Table, od.GPT)
}

// WriteStart records the start of a deploy on a freshly made ESP: the
// manifest bytes, the layout, the signature (or the removal of an older
// image's), then the state. The manifest goes first, so a state file
// always names a manifest that is already there.
func WriteStart(dev *disk.Disk, esp *disk.FAT, img *image.Resolved, lay layout.Layout, st *State) error {
	if err := esp.WriteFile(ManifestFile, img.Raw); err != nil {
		return fmt.Errorf("write %s on the ESP: %w", ManifestFile, err)
	}
	lb, err := layout.MarshalJSON(lay)
	if err != nil {
		return err
	}
	if err := esp.WriteFile(LayoutFile, lb); err != nil {
		return fmt.Errorf("write %s on the ESP: %w", LayoutFile, err)
	}
	// Only a signature that verified, or that holds as far as can be
	// told without a key, goes onto the disk: the disk passes it on.
	if sig := img.SignatureToKeep(); sig != nil {
		err = esp.WriteFile(SignatureFile, sig)
	} else {
		err = esp.Remove(SignatureFile) // a kept ESP may hold an older image's
	}
	if err != nil {
		return fmt.Errorf("%s on the ESP: %w", SignatureFile, err)
	}
	if err := dev.Sync(); err != nil {
		return err
	}
	return WriteState(dev, esp, st)
}

// WriteState replaces the journal on the ESP and syncs it.
func WriteState(dev *disk.Disk, esp ESPWriter, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := esp.WriteFile(StateFile, append(b, '\n')); err != nil {
		return fmt.Errorf("write %s on the ESP: %w", StateFile, err)
	}
	return dev.Sync()
}

// tableMatches reports whether the table recorded in the state is what the
// disk's GPT holds now.
func tableMatches(t *layout.Table, parts []layout.GPTPartition) bool {
	if len(parts) != len(t.Partitions) {
		return false
	}
	for i, p := range t.Partitions {
		q := parts[i]
		if q.Start != p.Start || q.Len != p.Len || q.GUID != p.GUID || q.Type != p.Type {
			return false
		}
	}
	return true
}

func newOnDisk(cur *Slot) *OnDisk { return &OnDisk{Slots: []*Slot{cur}, Slot: cur} }

func sortedLoaders(m *image.Manifest) []string {
	names := make([]string, 0, len(m.Loaders))
	for n := range m.Loaders {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
