package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/spf13/cobra"
)

func newBootNVRAM(e *env) *cobra.Command {
	var vars bootloader.Efivars
	c := &cobra.Command{
		Use:   "nvram",
		Short: "Firmware boot entries (Boot####, BootOrder, BootNext) of the running UEFI system",
	}
	c.PersistentFlags().StringVar(&vars.Dir, "efivars", bootloader.DefaultEfivars, "efivarfs mount point")
	_ = c.PersistentFlags().MarkHidden("efivars")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the firmware's boot entries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ents, order, err := vars.BootEntries()
			if err != nil {
				return err
			}
			if e.json {
				e.emitJSON(map[string]any{"entries": ents, "order": order})
				return nil
			}
			var o []string
			for _, n := range order {
				o = append(o, fmt.Sprintf("%04X", n))
			}
			e.printf("BootOrder: %s\n", strings.Join(o, ","))
			for _, lo := range ents {
				e.printf("Boot%04X %-30q %s %s\n", lo.Num, lo.Description, strings.ToLower(lo.Partition), lo.Path)
			}
			return nil
		},
	}

	var (
		diskPath, label, loader string
		next                    bool
	)
	add := &cobra.Command{
		Use:   "add --disk DISK [--next]",
		Short: "Add a firmware boot entry for imprint's loader on DISK's ESP (and boot it next, once, with --next)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if diskPath == "" {
				return fmt.Errorf("--disk is required")
			}
			where, err := bootloader.LoaderOnDisk(diskPath, loader)
			switch {
			case errors.Is(err, bootloader.ErrUnknownLoader):
				return fmt.Errorf("--loader %w", err)
			case err != nil:
				return fmt.Errorf("--disk: %w", err)
			}
			num, err := vars.AddBootEntry(label, where)
			if err != nil {
				return err
			}
			e.printf("Boot%04X %q -> %s on partition %d of %s\n", num, label, where.File, where.PartNum, diskPath)
			if next {
				if err := vars.SetBootNext(num); err != nil {
					return err
				}
				e.printf("BootNext = %04X (the next boot only)\n", num)
			}
			return nil
		},
	}
	add.Flags().StringVar(&diskPath, "disk", "", "the disk whose ESP holds imprint's loader")
	add.Flags().StringVar(&label, "label", "imprint", "entry description")
	add.Flags().StringVar(&loader, "loader", bootloader.SystemdBoot, "systemd-boot or grub")
	add.Flags().BoolVar(&next, "next", false, "also set BootNext to it")

	nextCmd := &cobra.Command{
		Use:   "next NUM",
		Short: "Boot firmware entry NUM (hex, e.g. 0003) once at the next boot",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := bootloader.ParseBootNum(args[0])
			if err != nil {
				return err
			}
			if err := vars.SetBootNext(n); err != nil {
				return err
			}
			e.printf("BootNext = %04X\n", n)
			return nil
		},
	}
	c.AddCommand(list, add, nextCmd)
	return c
}
