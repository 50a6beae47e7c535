package cli

import (
	"errors"
	"fmt"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/disk"
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

// open maps the flags to bootloader's ESP and its errors to the flags.
func (t *espTarget) open(write bool) (*bootloader.ESP, error) {
	switch {
	case (t.disk == "") == (t.dir == ""):
		return nil, fmt.Errorf("give one of --disk PATH or --esp DIR")
	case t.dir != "":
		esp, err := bootloader.OpenDirESP(t.dir)
		if err != nil {
			return nil, fmt.Errorf("--esp: %w", err)
		}
		return esp, nil
	}
	esp, err := bootloader.OpenDiskESP(t.disk, write)
	switch {
	case errors.Is(err, disk.ErrMounted), errors.Is(err, disk.ErrHeld), errors.Is(err, disk.ErrRunningRoot):
		return nil, fmt.Errorf("--disk: %w (for a running system's mounted ESP use --esp)", err)
	case err != nil:
		return nil, fmt.Errorf("--disk: %w", err)
	}
	return esp, nil
}

// edit opens the target for writing, runs change on it and closes it.
func (t *espTarget) edit(change func(*bootloader.ESP) (*bootloader.Menu, error)) error {
	esp, err := t.open(true)
	if err != nil {
		return err
	}
	_, err = change(esp)
	if cerr := esp.Close(); err == nil {
		err = cerr
	}
	return err
}

func newBoot(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "boot",
		Short: "List, add, remove boot entries and set the default on a deployed disk or a mounted ESP",
	}
	c.AddCommand(newBootList(e), newBootAdd(e), newBootRemove(e), newBootDefault(e), newBootNVRAM(e))
	return c
}

func newBootList(e *env) *cobra.Command {
	var t espTarget
	c := &cobra.Command{
		Use:   "list",
		Short: "Show the boot menu",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			esp, err := t.open(false)
			if err != nil {
				return err
			}
			defer esp.Close()
			m, err := esp.Menu()
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
			en.Initrd = initrd
			err := t.edit(func(esp *bootloader.ESP) (*bootloader.Menu, error) { return esp.AddEntry(en, def) })
			var fe *bootloader.FileError
			if errors.As(err, &fe) {
				return fmt.Errorf("--%s %s: %w", fe.Field, fe.Path, fe.Err)
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
			err := t.edit(func(esp *bootloader.ESP) (*bootloader.Menu, error) { return esp.RemoveEntry(args[0]) })
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
			var to *int
			if cmd.Flags().Changed("timeout") {
				to = &timeout
			}
			var now string
			err := t.edit(func(esp *bootloader.ESP) (*bootloader.Menu, error) {
				m, err := esp.SetDefault(args[0], to)
				if m != nil {
					now = m.Default
				}
				return m, err
			})
			if err == nil {
				if now != args[0] {
					// "local" on a disk with root slots.
					e.printf("default entry is now %s (the root slots; %s boots next)\n", args[0], now)
				} else {
					e.printf("default entry is now %s\n", args[0])
				}
			}
			return err
		},
	}
	t.flags(c)
	c.Flags().IntVar(&timeout, "timeout", 0, "menu timeout in seconds (0 boots the default at once)")
	return c
}
