package bootloader

import (
	"fmt"
	"path"
	"strings"
)

// What imprint sync and deploy --slots need on top of the slot entries of
// counting.go: turning a fresh install's local entry into a slot entry,
// writing a synced version's entry, taking away every entry that boots a
// slot about to be overwritten, and pruning old kernels.

// UseSlotEntry makes the local entries Install wrote boot slot: the
// agent's local entry becomes the slot's entry (good at once: a first
// deploy has nothing to fall back to), and the slots become the default.
// The image's-own-initrd entry stays as it is, a plain entry.
func UseSlotEntry(f FS, slot string) error {
	m, err := ReadMenu(f)
	if err != nil {
		return err
	}
	e, ok := m.Find(TypeLocal)
	if !ok {
		return fmt.Errorf("entry %q: %w", TypeLocal, ErrNoEntry)
	}
	local := *e
	m.Entries = without(m.Entries, func(x Entry) bool { return x.ID == TypeLocal })
	local.Title += " (slot " + slot + ")"
	if err := m.SetSlotEntry(slot, local, 0); err != nil {
		return err
	}
	return WriteMenu(f, m)
}

// KernelDir is where an image version's kernel, initrd and agent live.
func KernelDir(version string) string { return path.Join(Dir, version) }

// SlotEntry is a synced version's entry; its kernel files are already in
// KernelDir(Version).
type SlotEntry struct {
	Slot, Name, Version string
	Initrd, Agent       bool
	RootPARTUUID        string
	Cmdline             string // the image's own
	Tries               int
	// Downgrade says the version is older than the other slots': the
	// loaders sort entries newest version first, so the others are marked
	// bad for the older one to boot next. If it fails its tries, every
	// slot is bad and the newest boots again.
	Downgrade bool
}

// WriteSlotEntry adds or replaces slot's entry, on trial with s.Tries,
// shaped as Install shapes the local entry (the agent in local mode when
// the image has one); the other slot's entry stays, the way back.
func WriteSlotEntry(f FS, s SlotEntry) error {
	m, err := ReadMenu(f)
	if err != nil {
		return err
	}
	kdir := KernelDir(s.Version)
	root := "root=PARTUUID=" + strings.ToLower(s.RootPARTUUID)
	e := Entry{Title: "imprint: " + s.Name + " " + s.Version + " (local disk, slot " + s.Slot + ")", Version: s.Version,
		Linux: path.Join(kdir, "vmlinuz"), Options: strings.TrimSpace(root + " " + s.Cmdline)}
	switch {
	case s.Agent:
		e.Initrd = []string{path.Join(kdir, "agent.img")}
		e.Options = strings.TrimSpace(root + " imprint.mode=local " + disklessCmdline(s.Cmdline))
	case s.Initrd:
		e.Initrd = []string{path.Join(kdir, "initrd.img")}
	}
	if err := m.SetSlotEntry(s.Slot, e, s.Tries); err != nil {
		return err
	}
	if s.Downgrade {
		for _, o := range m.Entries {
			if o.Slot != "" && o.Slot != s.Slot {
				if err := m.MarkBad(o.ID); err != nil {
					return err
				}
			}
		}
	}
	return WriteMenu(f, m)
}

// RemoveSlotEntry takes away slot's entry and every other entry whose
// kernel command line boots the slot's root (partuuid), before the slot is
// overwritten; the default goes to keep's entry when it was slot's.
func RemoveSlotEntry(f FS, slot, partuuid, keep string) error {
	m, err := ReadMenu(f)
	if err != nil {
		return err
	}
	id, root := SlotEntryID(slot), "root=PARTUUID="+strings.ToLower(partuuid)
	n := len(m.Entries)
	m.Entries = without(m.Entries, func(x Entry) bool {
		return x.ID == id || (x.Linux != "" && strings.Contains(" "+x.Options+" ", " "+root+" "))
	})
	if len(m.Entries) == n {
		return nil
	}
	if _, ok := m.Find(m.Default); !ok {
		m.Default = SlotEntryID(keep)
		if _, ok := m.Find(m.Default); !ok {
			m.Default = ""
		}
	}
	return WriteMenu(f, m)
}

func without(es []Entry, drop func(Entry) bool) []Entry {
	var out []Entry
	for _, e := range es {
		if !drop(e) {
			out = append(out, e)
		}
	}
	return out
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
