package bootloader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// ErrEntryExists says an entry id is already in the menu.
var ErrEntryExists = errors.New("boot entry exists; remove it first")

// ErrIsDefault says the default entry cannot be removed.
var ErrIsDefault = errors.New("entry is the default; make another entry the default first")

// ErrNoFile says a file an entry needs is neither on this host nor on the
// ESP.
var ErrNoFile = errors.New("neither a file here nor on the ESP")

// FileError is a file of an entry that cannot be used; Field says which
// ("kernel", "initrd" or "efi"), so a caller can name its own option.
type FileError struct {
	Field, Path string
	Err         error
}

func (e *FileError) Error() string { return e.Field + " " + e.Path + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// Add appends e, refusing an id that is already there.
func (m *Menu) Add(e Entry) error {
	if _, dup := m.Find(e.ID); dup {
		return fmt.Errorf("entry %q: %w", e.ID, ErrEntryExists)
	}
	m.Entries = append(m.Entries, e)
	return nil
}

// Remove takes the entry id out of the menu; the default cannot go.
func (m *Menu) Remove(id string) error {
	if _, ok := m.Find(id); !ok {
		return fmt.Errorf("entry %q: %w; the menu has %s", id, ErrNoEntry, m.ids())
	}
	if m.Default == id {
		return fmt.Errorf("entry %q: %w", id, ErrIsDefault)
	}
	keep := m.Entries[:0:0]
	for _, e := range m.Entries {
		if e.ID != id {
			keep = append(keep, e)
		}
	}
	m.Entries = keep
	return nil
}

// SetDefault makes id the entry booted when nobody chooses. On a disk
// with root slots there is no entry "local": the slot entries took its
// place, so "local" means them (the one that boots next as the id; the
// loaders then boot whichever slot their rules pick, as after a sync).
func (m *Menu) SetDefault(id string) error {
	if id == TypeLocal {
		if _, ok := m.Find(id); !ok {
			if o := m.SlotOrder(); len(o) > 0 {
				id = o[0].ID
			}
		}
	}
	if _, ok := m.Find(id); !ok {
		return fmt.Errorf("entry %q: %w; the menu has %s", id, ErrNoEntry, m.ids())
	}
	m.Default = id
	return nil
}

func (m *Menu) ids() string {
	ids := make([]string, 0, len(m.Entries))
	for _, e := range m.Entries {
		ids = append(ids, e.ID)
	}
	if len(ids) == 0 {
		return "no entries"
	}
	return strings.Join(ids, ", ")
}

// Menu reads imprint's boot menu from the ESP.
func (e *ESP) Menu() (*Menu, error) { return ReadMenu(e.FS) }

// Edit reads the menu, lets change edit it and writes it back (WriteMenu:
// atomic, bootable at every step). Nothing is written if change fails.
func (e *ESP) Edit(change func(*Menu) error) (*Menu, error) {
	m, err := ReadMenu(e.FS)
	if err != nil {
		return nil, err
	}
	if err := change(m); err != nil {
		return nil, err
	}
	if err := WriteMenu(e.FS, m); err != nil {
		return nil, err
	}
	return m, nil
}

// AddEntry adds en to the menu, as the default if makeDefault. Its kernel,
// initrds and EFI binary are each a file on this host, copied to
// /EFI/imprint/entries/ID/ on the ESP, or a path already on the ESP. The
// entry and every file are checked before anything is written.
func (e *ESP) AddEntry(en Entry, makeDefault bool) (*Menu, error) {
	return e.Edit(func(m *Menu) error {
		if err := m.Add(en); err != nil {
			return err
		}
		if makeDefault {
			m.Default = en.ID
		}
		if err := m.Validate(); err != nil {
			return err
		}
		type copyJob struct {
			dst  *string
			data []byte
		}
		added := &m.Entries[len(m.Entries)-1]
		added.Initrd = append([]string(nil), en.Initrd...)
		var jobs []copyJob
		check := func(field string, p *string) error {
			if *p == "" {
				return nil
			}
			b, err := os.ReadFile(*p)
			switch {
			case err == nil:
				jobs = append(jobs, copyJob{p, b})
				return nil
			case !errors.Is(err, fs.ErrNotExist):
				return &FileError{Field: field, Path: *p, Err: err}
			case !e.FS.Exists(*p):
				return &FileError{Field: field, Path: *p, Err: ErrNoFile}
			}
			return nil
		}
		if err := check("kernel", &added.Linux); err != nil {
			return err
		}
		if err := check("efi", &added.EFI); err != nil {
			return err
		}
		for i := range added.Initrd {
			if err := check("initrd", &added.Initrd[i]); err != nil {
				return err
			}
		}
		for _, j := range jobs {
			dst := path.Join(Dir, "entries", en.ID, path.Base(*j.dst))
			if err := writeNew(e.FS, dst, j.data); err != nil {
				return err
			}
			*j.dst = dst
		}
		return nil
	})
}

// RemoveEntry takes the entry id out of the menu; the default cannot go.
// Files the entry brought onto the ESP stay (another entry may use them).
func (e *ESP) RemoveEntry(id string) (*Menu, error) {
	return e.Edit(func(m *Menu) error { return m.Remove(id) })
}

// SetDefault makes id the default entry and, when timeout is not nil,
// sets the menu timeout in seconds (0 boots the default at once).
func (e *ESP) SetDefault(id string, timeout *int) (*Menu, error) {
	return e.Edit(func(m *Menu) error {
		if err := m.SetDefault(id); err != nil {
			return err
		}
		if timeout != nil {
			m.Timeout = *timeout
		}
		return nil
	})
}
