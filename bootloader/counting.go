package bootloader

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/imprint-dev/imprint/image"
)

// Boot counting (Boot Loader Specification, "Automatic Boot Assessment")
// for the root slots' entries.
//
// systemd-boot (checked against its v252 source, boot_entry_compare and
// config_default_entry_select) does not skip an entry whose tries ran out:
// it sorts entries with no tries left after all others, then entries with
// a sort-key before those without, then by sort-key, machine-id, and
// version newest first, then by file name (a version compare, newest
// first). The default is the first entry, in that order, that matches the
// loader.conf pattern, and the file name with its counter is the entry's
// id. So the slot entries carry "sort-key imprint" and their image version,
// and loader.conf's default is a pattern matching every slot entry
// (SlotPattern): the newest slot that is good or still has tries boots,
// and a slot whose tries ran out falls behind the other by itself.
// Pinning one entry's name would keep booting it however often it fails.
//
// GRUB gets the same decisions from grubenv (GrubEnv): per slot entry a
// "good" flag and a try counter; grub.cfg picks the first slot entry in
// the same order that is good or has tries left, and the entry decrements
// its counter and saves it before it loads the kernel.

// SlotEntryPrefix starts the id of every slot entry: "slot-" + slot.
const SlotEntryPrefix = "slot-"

// SlotPattern is loader.conf's default when the slots are the default: it
// matches every slot entry's file, counter or not.
const SlotPattern = entryPfx + SlotEntryPrefix + "*"

// SortKey is the sort-key of the slot entries; it puts them before every
// entry without one.
const SortKey = "imprint"

// MaxTries is the most tries a new entry may get: grub.cfg counts down
// through a chain of comparisons (GRUB's script has no arithmetic).
const MaxTries = 9

// Sentinel errors callers act on.
var (
	// ErrNoSlotEntry says the menu has no entry for a slot.
	ErrNoSlotEntry = errors.New("no boot entry for that slot")
	// ErrNotCounted says an entry has no boot counting: it is not a slot
	// entry.
	ErrNotCounted = errors.New("not a slot entry (no boot counting)")
	// ErrNoOtherSlot says a rollback has no other slot to go to.
	ErrNoOtherSlot = errors.New("the menu has no other slot entry")
	// ErrFailedSlot says a rollback would go to a slot whose version ran
	// out of tries without a good boot: blessing it would boot a version
	// known not to boot, for good.
	ErrFailedSlot = errors.New("the other slot failed its boots")
)

var slotRE = regexp.MustCompile(`^[a-z]$`)

// SlotEntryID is the entry id of a root slot's entry.
func SlotEntryID(slot string) string { return SlotEntryPrefix + slot }

// SetSlotEntry adds or replaces slot's entry with e (its ID, Type and Slot
// are set here). tries > 0 makes it a new entry on trial with that many
// boots to reach boot-complete; 0 makes it good at once (the first deploy).
// The slots become the default. The other slot's entry is kept: it is the
// way back.
func (m *Menu) SetSlotEntry(slot string, e Entry, tries int) error {
	if !slotRE.MatchString(slot) {
		return fmt.Errorf("slot %q: want one lower-case letter (a, b)", slot)
	}
	if tries < 0 || tries > MaxTries {
		return fmt.Errorf("tries %d: want 0 (good at once) to %d", tries, MaxTries)
	}
	e.ID, e.Type, e.Slot = SlotEntryID(slot), TypeLocal, slot
	e.Tries = nil
	if tries > 0 {
		e.Tries = &Tries{Left: tries}
	}
	if old, ok := m.Find(e.ID); ok {
		*old = e
	} else {
		m.Entries = append(m.Entries, e)
	}
	m.Default = e.ID
	return nil
}

func (m *Menu) slotEntry(id string) (*Entry, error) {
	e, ok := m.Find(id)
	if !ok {
		return nil, fmt.Errorf("entry %q: %w; the menu has %s", id, ErrNoEntry, m.ids())
	}
	if e.Slot == "" {
		return nil, fmt.Errorf("entry %q: %w", id, ErrNotCounted)
	}
	return e, nil
}

// Bless marks entry id good: its counter goes (systemd-boot: the file is
// renamed without "+LEFT-DONE") and it stays bootable for good. Blessing a
// good entry changes nothing.
func (m *Menu) Bless(id string) error {
	e, err := m.slotEntry(id)
	if err != nil {
		return err
	}
	e.Tries = nil
	return nil
}

// MarkBad takes entry id's tries away ("+0"): the loaders sort it after the
// other slot's entry from the next boot on.
func (m *Menu) MarkBad(id string) error {
	e, err := m.slotEntry(id)
	if err != nil {
		return err
	}
	done := 0
	if e.Tries != nil {
		done = e.Tries.Done
	}
	e.Tries = &Tries{Left: 0, Done: done}
	return nil
}

// Prefer makes slot's entry the one that boots next, by marking, not by
// pinning: it is blessed if its tries ran out, every other slot entry is
// marked bad, and the slots stay the default.
func (m *Menu) Prefer(slot string) error {
	id := SlotEntryID(slot)
	e, ok := m.Find(id)
	if !ok || e.Slot == "" {
		return fmt.Errorf("slot %q: %w", slot, ErrNoSlotEntry)
	}
	if e.Tries != nil && e.Tries.Left == 0 {
		e.Tries = nil
	}
	for i := range m.Entries {
		if o := &m.Entries[i]; o.Slot != "" && o.ID != id {
			if err := m.MarkBad(o.ID); err != nil {
				return err
			}
		}
	}
	m.Default = id
	return nil
}

// Rollback prefers the slot entry after the one that boots next now (of
// two slots, the other one).
func (m *Menu) Rollback() (slot string, err error) {
	order := m.SlotOrder()
	if len(order) < 2 {
		return "", ErrNoOtherSlot
	}
	next := order[1]
	if t := next.Tries; t != nil && t.Left == 0 && t.Done > 0 {
		return next.Slot, fmt.Errorf("%w: slot %s (%s) ran out of tries after %d boots that did not reach boot-complete; sync a good version into it instead", ErrFailedSlot, next.Slot, next.Version, t.Done)
	}
	return next.Slot, m.Prefer(next.Slot)
}

// SlotState is one slot entry as `imprint slots` shows it.
type SlotState struct {
	Slot    string `json:"slot"`
	ID      string `json:"id"`
	Version string `json:"version"`
	// Tries is nil for a good (blessed) entry.
	Tries   *Tries `json:"tries,omitempty"`
	Blessed bool   `json:"blessed"`
	// Bad says its tries ran out before it was blessed.
	Bad bool `json:"bad"`
	// Next says the loaders boot it next when nobody chooses.
	Next bool `json:"next"`
}

// Slots are the slot entries, by slot name.
func (m *Menu) Slots() []SlotState {
	var next string
	if o := m.SlotOrder(); len(o) > 0 && m.slotsAreDefault() {
		next = o[0].ID
	}
	var out []SlotState
	for _, e := range m.Entries {
		if e.Slot == "" {
			continue
		}
		s := SlotState{Slot: e.Slot, ID: e.ID, Version: e.Version, Tries: e.Tries, Blessed: e.Tries == nil, Next: e.ID == next}
		s.Bad = e.Tries != nil && e.Tries.Left == 0
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Slot < out[j].Slot })
	return out
}

func (m *Menu) slotsAreDefault() bool {
	e, ok := m.Find(m.Default)
	return ok && e.Slot != ""
}

// SlotOrder is the slot entries in the order systemd-boot sorts them (and
// grub.cfg walks them): entries with tries left or blessed first, newest
// version first; the first one boots.
func (m *Menu) SlotOrder() []Entry {
	var out []Entry
	for _, e := range m.Entries {
		if e.Slot != "" {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return bootEntryCompare(out[i], out[j]) < 0 })
	return out
}

// bootEntryCompare is systemd-boot 252's boot_entry_compare for two slot
// entries (both with the same sort-key and no machine-id).
func bootEntryCompare(a, b Entry) int {
	zero := func(e Entry) bool { return e.Tries != nil && e.Tries.Left == 0 }
	if za, zb := zero(a), zero(b); za != zb {
		if za {
			return 1
		}
		return -1
	}
	if r := -image.CompareVersions(a.Version, b.Version); r != 0 {
		return r
	}
	if r := -image.CompareVersions(strings.ToLower(entryFileName(a)), strings.ToLower(entryFileName(b))); r != 0 {
		return r
	}
	if a.Tries == nil || b.Tries == nil {
		return 0
	}
	if a.Tries.Left != b.Tries.Left {
		if a.Tries.Left > b.Tries.Left {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.Tries.Done, b.Tries.Done)
}
