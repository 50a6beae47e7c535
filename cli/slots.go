package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/spf13/cobra"
)

// espMounts are where a running system usually has its ESP mounted; bless
// looks there when neither --esp nor --disk is given, since it runs from a
// unit on every boot.
var espMounts = []string{"/boot/efi", "/efi", "/boot"}

// openRunningESP opens the target like espTarget, or else the first mounted
// ESP that holds imprint's menu.
func (t *espTarget) openRunning(write bool) (*bootloader.ESP, error) {
	if t.disk != "" || t.dir != "" {
		return t.open(write)
	}
	for _, d := range espMounts {
		if _, err := os.Stat(filepath.Join(d, filepath.FromSlash(bootloader.MenuFile))); err == nil {
			t.dir = d
			return t.open(write)
		}
	}
	return nil, fmt.Errorf("no mounted ESP with an imprint menu in %v: give --esp DIR or --disk DEV", espMounts)
}

func newBless(e *env) *cobra.Command {
	var (
		t       espTarget
		vars    bootloader.Efivars
		cmdline string
		entry   string
	)
	c := &cobra.Command{
		Use:   "bless [--esp DIR | --disk DEV]",
		Short: "Mark the boot entry this system booted from as good (boot counting)",
		Long: "Mark the boot entry that booted the running system as good: its try counter goes and the loaders keep\n" +
			"booting it. The entry is found from systemd-boot's LoaderEntrySelected EFI variable or the kernel\n" +
			"command line's imprint.entry=. Run it once boot-complete.target is reached (imprint-bless.service).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := os.ReadFile(cmdline)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("read %s: %w", cmdline, err)
			}
			esp, err := t.openRunning(true)
			if err != nil {
				return err
			}
			var r bootloader.BlessResult
			if entry != "" {
				r, err = esp.BlessEntry(entry)
			} else {
				r, err = esp.BlessBooted(vars, string(line))
			}
			if cerr := esp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if e.json {
				e.emitJSON(r)
				return nil
			}
			switch {
			case !r.Counted:
				e.printf("entry %s has no boot counting: nothing to bless\n", r.ID)
			case r.Changed:
				e.printf("entry %s is good\n", r.ID)
			default:
				e.printf("entry %s was good already\n", r.ID)
			}
			return nil
		},
	}
	t.flags(c)
	c.Flags().StringVar(&vars.Dir, "efivars", bootloader.DefaultEfivars, "efivarfs mount point")
	c.Flags().StringVar(&cmdline, "cmdline", "/proc/cmdline", "kernel command line file")
	c.Flags().StringVar(&entry, "entry", "", "bless this entry (slot-a, slot-b) instead of the one that booted: from a host that saw a disk boot well")
	_ = c.Flags().MarkHidden("efivars")
	_ = c.Flags().MarkHidden("cmdline")
	return c
}

func newRollback(e *env) *cobra.Command {
	var t espTarget
	c := &cobra.Command{
		Use:   "rollback (--disk DEV | --esp DIR)",
		Short: "Boot the other root slot from now on (its entry good, the current one marked bad)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			esp, err := t.open(true)
			if err != nil {
				return err
			}
			slot, m, err := esp.Rollback()
			if cerr := esp.Close(); err == nil {
				err = cerr
			}
			if errors.Is(err, bootloader.ErrNoOtherSlot) {
				return fmt.Errorf("%w: this disk has one root slot, there is nothing to roll back to", err)
			}
			if err != nil {
				return err
			}
			if e.json {
				e.emitJSON(m.Slots())
				return nil
			}
			en, _ := m.Find(bootloader.SlotEntryID(slot))
			e.printf("slot %s (%s) boots next\n", slot, en.Version)
			return nil
		},
	}
	t.flags(c)
	return c
}

func newSlots(e *env) *cobra.Command {
	var t espTarget
	c := &cobra.Command{
		Use:   "slots (--disk DEV | --esp DIR)",
		Short: "Show the root slots' boot entries: version, tries left, good or not, which boots next",
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
			st := m.Slots()
			if e.json {
				if st == nil {
					st = []bootloader.SlotState{}
				}
				e.emitJSON(st)
				return nil
			}
			if len(st) == 0 {
				e.printf("no slot entries on this disk (deployed with one root)\n")
				return nil
			}
			for _, s := range st {
				mark := " "
				if s.Next {
					mark = "*"
				}
				state := "good"
				switch {
				case s.Bad:
					state = fmt.Sprintf("bad (no tries left, %d done)", s.Tries.Done)
				case s.Tries != nil:
					state = fmt.Sprintf("on trial: %d tries left, %d done", s.Tries.Left, s.Tries.Done)
				}
				e.printf("%s slot %s  %-20s %s\n", mark, s.Slot, s.Version, state)
			}
			return nil
		},
	}
	t.flags(c)
	return c
}
