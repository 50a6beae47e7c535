package bootloader

import (
	"fmt"
	"path"
	"strings"
)

// The smallest slot API imprint sync needs; branch bootcount owns boot
// counting, blessing and the default pattern and is expected to replace
// these.

// SlotEntryID is the menu id of the local entry that boots root slot s.
func SlotEntryID(slot string) string { return TypeLocal + "-" + slot }

// UseSlotEntry renames the "local" entry Install wrote to the entry of
// slot, pointing at that slot's root, and makes it the default.
func UseSlotEntry(f FS, slot string) error {
	m, err := ReadMenu(f)
	if err != nil {
		return err
	}
	e, ok := m.Find(TypeLocal)
	if !ok {
		return fmt.Errorf("entry %q: %w", TypeLocal, ErrNoEntry)
	}
	e.ID = SlotEntryID(slot)
	e.Title += " (slot " + slot + ")"
	m.Default = e.ID
	return WriteMenu(f, m)
}

// KernelDir is where an image version's kernel, initrd and agent live.
func KernelDir(version string) string { return path.Join(Dir, version) }

// SlotEntry is a local entry for a slot whose kernel files are already on
// the ESP (KernelDir).
type SlotEntry struct {
	Slot, Name, Version string
	Initrd              bool
	Options             string // full kernel command line, root= included
	Tries               int    // boot counting tries; 0: none
}

// WriteSlotEntry adds or replaces slot's local entry and makes it the
// default; the other entries stay.
func WriteSlotEntry(f FS, s SlotEntry) error {
	m, err := ReadMenu(f)
	if err != nil {
		return err
	}
	kdir := KernelDir(s.Version)
	e := Entry{ID: SlotEntryID(s.Slot), Type: TypeLocal, Title: "imprint: " + s.Name + " " + s.Version + " (local disk, slot " + s.Slot + ")",
		Version: s.Version, Linux: path.Join(kdir, "vmlinuz"), Options: strings.TrimSpace(s.Options)}
	if s.Initrd {
		e.Initrd = []string{path.Join(kdir, "initrd.img")}
	}
	if s.Tries > 0 {
		e.Tries = &Tries{Left: s.Tries}
	}
	if old, ok := m.Find(e.ID); ok {
		*old = e
	} else {
		m.Entries = append([]Entry{e}, m.Entries...)
	}
	m.Default = e.ID
	return WriteMenu(f, m)
}

// RemoveSlotEntry drops slot's local entry (before the slot is
// overwritten); the default moves to keep, the slot that stays bootable.
func RemoveSlotEntry(f FS, slot, keep string) error {
	m, err := ReadMenu(f)
	if err != nil {
		return err
	}
	id := SlotEntryID(slot)
	if _, ok := m.Find(id); !ok && m.Default != id {
		return nil
	}
	var out []Entry
	for _, e := range m.Entries {
		if e.ID != id {
			out = append(out, e)
		}
	}
	m.Entries = out
	if _, ok := m.Find(SlotEntryID(keep)); ok {
		m.Default = SlotEntryID(keep)
	}
	return WriteMenu(f, m)
}

// PruneKernels removes the kernel directories of versions not in keep.
func PruneKernels(f FS, keep ...string) ([]string, error) {
	ents, err := f.ReadDir(Dir)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, k := range keep {
		want[k] = true
	}
	var gone []string
	for _, d := range ents {
		if !d.IsDir() || want[d.Name()] {
			continue
		}
		dir := path.Join(Dir, d.Name())
		files, err := f.ReadDir(dir)
		if err != nil {
			return gone, err
		}
		ours := len(files) > 0
		for _, x := range files {
			switch x.Name() {
			case "vmlinuz", "initrd.img", "agent.img":
			default:
				ours = false // not a kernel directory of imprint's
			}
		}
		if !ours {
			continue
		}
		for _, x := range files {
			if err := f.Remove(path.Join(dir, x.Name())); err != nil {
				return gone, err
			}
		}
		_ = f.Remove(dir) // an empty directory left behind costs nothing
		gone = append(gone, d.Name())
	}
	return gone, nil
}
