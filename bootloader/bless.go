package bootloader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"
)

// LoaderVariable is the vendor GUID of systemd-boot's variables (the Boot
// Loader Interface): LoaderEntrySelected, LoaderBootCountPath.
const LoaderVariable = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// ErrUnknownBoot says neither the loader nor the kernel command line names
// the entry that booted.
var ErrUnknownBoot = errors.New("cannot tell which boot entry booted: no LoaderEntrySelected EFI variable and no " + EntryArg + "= on the kernel command line")

// LoaderString reads one of systemd-boot's string variables (UTF-16LE,
// NUL-terminated); ok is false when it is not set.
func (e Efivars) LoaderString(name string) (value string, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(e.Dir, name+"-"+LoaderVariable))
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("EFI variable %s: %w", name, err)
	}
	if len(b) < 4 {
		return "", false, fmt.Errorf("EFI variable %s: %d bytes", name, len(b))
	}
	b = b[4:] // attributes
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u)), true, nil
}

// BootedEntry is the imprint entry id that booted the running system:
// systemd-boot's LoaderEntrySelected (the entry's file name, counter
// included) when it names an imprint entry, else imprint.entry= from the
// kernel command line, which imprint puts in every kernel entry (so GRUB
// boots are found too).
func BootedEntry(vars Efivars, cmdline string) (string, error) {
	sel, ok, err := vars.LoaderString("LoaderEntrySelected")
	if err != nil {
		return "", err
	}
	if ok {
		name := sel
		if !strings.HasSuffix(strings.ToLower(name), ".conf") {
			name += ".conf"
		}
		if id, _, ok := parseEntryName(strings.ToLower(name)); ok {
			return id, nil
		}
	}
	for _, w := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(w, EntryArg+"="); ok && idRE.MatchString(v) {
			return v, nil
		}
	}
	return "", ErrUnknownBoot
}

// BlessResult says what Bless did.
type BlessResult struct {
	ID string
	// Changed is false when the entry was good already or is not counted.
	Changed bool
	Counted bool
}

// BlessBooted marks the entry that booted now (BootedEntry) good. An entry
// without boot counting (diskless, a user's entry) needs nothing and is not
// an error: the bless service runs on every boot.
func (e *ESP) BlessBooted(vars Efivars, cmdline string) (BlessResult, error) {
	id, err := BootedEntry(vars, cmdline)
	if err != nil {
		return BlessResult{}, err
	}
	return e.BlessEntry(id)
}

// BlessEntry marks entry id good, as BlessBooted does for the booted one:
// for a host that watched the boot (a test, a provisioning system) and
// blesses a disk that is not running.
func (e *ESP) BlessEntry(id string) (BlessResult, error) {
	r := BlessResult{ID: id}
	m, err := e.Menu()
	if err != nil {
		return r, err
	}
	en, ok := m.Find(id)
	if !ok {
		return r, fmt.Errorf("the booted entry %q is not in this ESP's menu (%s): is it the ESP this system booted from? %w", id, m.ids(), ErrNoEntry)
	}
	if en.Slot == "" {
		return r, nil
	}
	r.Counted = true
	if en.Tries == nil {
		return r, nil
	}
	_, err = e.Edit(func(m *Menu) error { return m.Bless(id) })
	r.Changed = err == nil
	return r, err
}

// Rollback makes the slot after the one that boots next the preferred one,
// now, by marking entries (Menu.Rollback). It returns the slot.
func (e *ESP) Rollback() (string, *Menu, error) {
	var slot string
	m, err := e.Edit(func(m *Menu) error {
		s, err := m.Rollback()
		slot = s
		return err
	})
	return slot, m, err
}

// SetSlotEntry adds or replaces a slot's entry with tries (Menu.SetSlotEntry).
func (e *ESP) SetSlotEntry(slot string, en Entry, tries int) (*Menu, error) {
	return e.Edit(func(m *Menu) error { return m.SetSlotEntry(slot, en, tries) })
}
