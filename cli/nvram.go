package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/layout"
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
			dev, err := disk.OpenDisk(diskPath, disk.OpenOptions{})
			if err != nil {
				return err
			}
			defer dev.Close()
			_, parts, err := disk.ReadGPT(dev)
			if err != nil {
				return fmt.Errorf("%s: %w", diskPath, err)
			}
			var esp *layout.GPTPartition
			for i := range parts {
				if parts[i].Type == layout.TypeESP {
					esp = &parts[i]
					break
				}
			}
			if esp == nil {
				return fmt.Errorf("%s has no EFI System Partition", diskPath)
			}
			file := `\EFI\systemd\systemd-bootx64.efi`
			if loader == bootloader.Grub {
				file = `\EFI\imprint\grubx64.efi`
			}
			ss := dev.SectorSize()
			num, err := vars.AddBootEntry(label, bootloader.DiskPath{
				PartNum: uint32(esp.Index), Start: uint64(esp.Start / ss), Len: uint64(esp.Len / ss), PartGUID: esp.GUID, File: file,
			})
			if err != nil {
				return err
			}
			e.printf("Boot%04X %q -> %s on partition %d of %s\n", num, label, file, esp.Index, diskPath)
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
			n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(args[0]), "boot"), 16, 16)
			if err != nil {
				return fmt.Errorf("%q is not a boot entry number like 0003", args[0])
			}
			if err := vars.SetBootNext(uint16(n)); err != nil {
				return err
			}
			e.printf("BootNext = %04X\n", n)
			return nil
		},
	}
	c.AddCommand(list, add, nextCmd)
	return c
}
