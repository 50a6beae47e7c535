package cli

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/layout"
	"github.com/spf13/cobra"
)

// espTarget is where `imprint boot` works: an unmounted disk or image file
// (through the FAT code) or a mounted ESP directory.
type espTarget struct {
	disk, dir string
}

func (t *espTarget) flags(c *cobra.Command) {
	c.Flags().StringVar(&t.disk, "disk", "", "deployed disk or image file (not mounted)")
	c.Flags().StringVar(&t.dir, "esp", "", "mounted ESP of a running system, e.g. /boot/efi")
}

// open returns the ESP and a function that flushes and closes it.
func (t *espTarget) open(write bool) (bootloader.FS, func() error, error) {
	switch {
	case (t.disk == "") == (t.dir == ""):
		return nil, nil, fmt.Errorf("give one of --disk PATH or --esp DIR")
	case t.dir != "":
		if st, err := os.Stat(t.dir); err != nil || !st.IsDir() {
			return nil, nil, fmt.Errorf("--esp %s is not a directory", t.dir)
		}
		return bootloader.DirFS(t.dir), func() error { return nil }, nil
	}
	if write {
		if err := disk.CheckTarget(t.disk); err != nil {
			return nil, nil, fmt.Errorf("%w (for a running system's mounted ESP use --esp)", err)
		}
	}
	dev, err := disk.OpenDisk(t.disk, disk.OpenOptions{Write: write})
	if err != nil {
		return nil, nil, err
	}
	_, parts, err := disk.ReadGPT(dev)
	if err != nil {
		dev.Close()
		return nil, nil, fmt.Errorf("%s: %w", t.disk, err)
	}
	for _, p := range parts {
		if p.Type == layout.TypeESP {
			fat, err := disk.OpenFAT(dev, p.Start, p.Len)
			if err != nil {
				dev.Close()
				return nil, nil, err
			}
			return fat, func() error {
				err := dev.Sync()
				if cerr := dev.Close(); err == nil {
					err = cerr
				}
				return err
			}, nil
		}
	}
	dev.Close()
	return nil, nil, fmt.Errorf("%s has no EFI System Partition", t.disk)
}

func newBoot(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "boot",
		Short: "List, add, remove boot entries and set the default on a deployed disk or a mounted ESP",
	}
	c.AddCommand(newBootList(e), newBootAdd(e), newBootRemove(e), newBootDefault(e), newBootNVRAM(e))
	return c
}

// editMenu loads the menu, lets change edit it and writes it back.
func editMenu(t *espTarget, change func(*bootloader.Menu) error) (*bootloader.Menu, error) {
	f, done, err := t.open(true)
	if err != nil {
		return nil, err
	}
	m, err := bootloader.ReadMenu(f)
	if err == nil {
		err = change(m)
	}
	if err == nil {
		err = bootloader.WriteMenu(f, m)
	}
	if cerr := done(); err == nil {
		err = cerr
	}
	return m, err
}

func newBootList(e *env) *cobra.Command {
	var t espTarget
	c := &cobra.Command{
		Use:   "list",
		Short: "Show the boot menu",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, done, err := t.open(false)
			if err != nil {
				return err
			}
			defer done()
			m, err := bootloader.ReadMenu(f)
			if err != nil {
				return err
			}
			if e.json {
				e.emitJSON(m)
				return nil
			}
			e.printf("loader %s (firmware %s), timeout %ds\n", m.Loader, m.Firmware, m.Timeout)
			for _, en := range m.Entries {
				mark := " "
				if en.ID == m.Default {
					mark = "*"
				}
				what := en.EFI
				if what == "" {
					what = en.Linux + " " + en.Options
				}
				e.printf("%s %-22s %s\n    %s\n", mark, en.ID, en.Title, what)
			}
			return nil
		},
	}
	t.flags(c)
	return c
}

func newBootAdd(e *env) *cobra.Command {
	var (
		t      espTarget
		en     bootloader.Entry
		initrd []string
		def    bool
	)
	c := &cobra.Command{
		Use:   "add --id ID --title TITLE (--kernel FILE [--initrd FILE] [--options ARGS] | --efi FILE)",
		Short: "Add a boot entry (files from the host are copied onto the ESP)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if en.ID == "" || en.Title == "" {
				return fmt.Errorf("--id and --title are required")
			}
			f, done, err := t.open(true)
			if err != nil {
				return err
			}
			m, err := bootloader.ReadMenu(f)
			if err == nil {
				if _, dup := m.Find(en.ID); dup {
					err = fmt.Errorf("entry %q exists; remove it first", en.ID)
				}
			}
			place := func(p string) (string, error) {
				if p == "" {
					return "", nil
				}
				if b, rerr := os.ReadFile(p); rerr == nil {
					dst := path.Join(bootloader.Dir, "entries", en.ID, path.Base(p))
					return dst, f.WriteFile(dst, b)
				} else if !errors.Is(rerr, os.ErrNotExist) {
					return "", rerr
				}
				if !f.Exists(p) {
					return "", fmt.Errorf("%s is neither a file here nor on the ESP", p)
				}
				return p, nil
			}
			if err == nil {
				en.Linux, err = place(en.Linux)
			}
			if err == nil {
				en.EFI, err = place(en.EFI)
			}
			for _, i := range initrd {
				if err != nil {
					break
				}
				var p string
				p, err = place(i)
				en.Initrd = append(en.Initrd, p)
			}
			if err == nil {
				m.Entries = append(m.Entries, en)
				if def {
					m.Default = en.ID
				}
				err = bootloader.WriteMenu(f, m)
			}
			if cerr := done(); err == nil {
				err = cerr
			}
			if err == nil {
				e.printf("added entry %s\n", en.ID)
			}
			return err
		},
	}
	t.flags(c)
	c.Flags().StringVar(&en.ID, "id", "", "entry id (lower-case letters, digits, . _ -)")
	c.Flags().StringVar(&en.Title, "title", "", "menu title")
	c.Flags().StringVar(&en.Linux, "kernel", "", "kernel: a file here, or a path on the ESP")
	c.Flags().StringArrayVar(&initrd, "initrd", nil, "initrd (repeatable)")
	c.Flags().StringVar(&en.Options, "options", "", "kernel command line")
	c.Flags().StringVar(&en.EFI, "efi", "", "EFI binary to chainload: a file here, or a path on the ESP")
	c.Flags().BoolVar(&def, "default", false, "make it the default entry")
	return c
}

func newBootRemove(e *env) *cobra.Command {
	var t espTarget
	c := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a boot entry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := editMenu(&t, func(m *bootloader.Menu) error {
				id := args[0]
				if _, ok := m.Find(id); !ok {
					return fmt.Errorf("entry %q: %w (see imprint boot list)", id, bootloader.ErrNoEntry)
				}
				if m.Default == id {
					return fmt.Errorf("entry %q is the default; make another entry the default first", id)
				}
				var keep []bootloader.Entry
				for _, en := range m.Entries {
					if en.ID != id {
						keep = append(keep, en)
					}
				}
				m.Entries = keep
				return nil
			})
			if err == nil {
				e.printf("removed entry %s\n", args[0])
			}
			return err
		},
	}
	t.flags(c)
	return c
}

func newBootDefault(e *env) *cobra.Command {
	var (
		t       espTarget
		timeout int
	)
	c := &cobra.Command{
		Use:   "default ID [--timeout SECONDS]",
		Short: "Set the entry booted when nobody chooses, and the menu timeout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := editMenu(&t, func(m *bootloader.Menu) error {
				if _, ok := m.Find(args[0]); !ok {
					ids := make([]string, 0, len(m.Entries))
					for _, en := range m.Entries {
						ids = append(ids, en.ID)
					}
					return fmt.Errorf("entry %q: %w; the menu has %s", args[0], bootloader.ErrNoEntry, strings.Join(ids, ", "))
				}
				m.Default = args[0]
				if cmd.Flags().Changed("timeout") {
					m.Timeout = timeout
				}
				return nil
			})
			if err == nil {
				e.printf("default entry is now %s\n", args[0])
			}
			return err
		},
	}
	t.flags(c)
	c.Flags().IntVar(&timeout, "timeout", 0, "menu timeout in seconds (0 boots the default at once)")
	return c
}
