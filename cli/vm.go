package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/internal/tmpdir"
	"github.com/spf13/cobra"
)

func newVM(e *env) *cobra.Command {
	var (
		bios, persist bool
		entry, until  string
		memory        int
		timeout       time.Duration
	)
	c := &cobra.Command{
		Use:   "vm DISK [--bios] [--entry ID]",
		Short: "Boot a disk image in QEMU (software emulation) with its serial console on this terminal",
		Long: `Boot a disk image in QEMU with OVMF (UEFI) or SeaBIOS (--bios), the serial
console on this terminal. Writes to the disk are discarded unless --persist.
--entry boots one menu entry: the default is changed on a sparse copy of the
disk, never on the disk itself.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := qemu.Available(); err != nil {
				return err
			}
			diskPath := args[0]
			td, err := tmpdir.New("", "vm")
			if err != nil {
				return err
			}
			defer td.Remove()
			dir := td.Path
			if entry != "" {
				cp := filepath.Join(dir, "disk.img")
				if err := disk.CopySparseFile(diskPath, cp); err != nil {
					return err
				}
				t := espTarget{disk: cp}
				zero := 0
				if err := t.edit(func(esp *bootloader.ESP) (*bootloader.Menu, error) { return esp.SetDefault(entry, &zero) }); err != nil {
					return fmt.Errorf("--entry: %w", err)
				}
				diskPath = cp
			}
			cfg := qemu.Config{
				Firmware: qemu.UEFI, MemoryMiB: memory, Dir: dir,
				Disks:   []qemu.Disk{{Path: diskPath}},
				Console: e.io.Out, Snapshot: !persist,
			}
			if bios {
				cfg.Firmware = qemu.BIOS
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			vm, err := qemu.Start(ctx, cfg)
			if err != nil {
				return err
			}
			defer vm.Close()
			if until != "" {
				if err := vm.Expect(ctx, qemu.Marker{Text: until, Timeout: timeout}); err != nil {
					return err
				}
				fmt.Fprintf(e.io.Err, "\nimprint vm: saw %q\n", until)
				vm.Kill()
				return nil
			}
			return vm.Wait(ctx)
		},
	}
	c.Flags().BoolVar(&bios, "bios", false, "boot with SeaBIOS (legacy BIOS) instead of OVMF (UEFI)")
	c.Flags().StringVar(&entry, "entry", "", "boot this menu entry")
	c.Flags().BoolVar(&persist, "persist", false, "keep the guest's writes to the disk")
	c.Flags().StringVar(&until, "until", "", "stop when this text appears on the console")
	c.Flags().IntVar(&memory, "memory", 1024, "guest memory in MiB")
	c.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: never)")
	return c
}
