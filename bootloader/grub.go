package bootloader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/imprint-dev/imprint/internal/tmpdir"
)

// grubEFIModules are built into the GRUB EFI image, so it needs nothing
// from the ESP but its configuration (loadenv: boot counting in grubenv).
var grubEFIModules = []string{
	"part_gpt", "part_msdos", "fat", "ext2", "normal", "configfile", "linux", "chain", "echo",
	"search", "search_fs_uuid", "search_fs_file", "efi_gop", "all_video", "serial", "terminal", "loadenv",
	"test", "boot", "sleep", "reboot", "halt", "ls", "cat", "gzio", "regexp",
}

// BuildGrubEFI makes a standalone GRUB EFI image with grub-mkimage, at
// build time (the image carries it as image.LoaderGrubEFI). Its embedded
// configuration holds no per-disk value: it finds the ESP by imprint's
// grub.cfg on it and reads that. modDir is GRUB's x86_64-efi directory
// ("" for /usr/lib/grub/x86_64-efi).
func BuildGrubEFI(ctx context.Context, modDir, tmpDir string) ([]byte, error) {
	if _, err := exec.LookPath("grub-mkimage"); err != nil {
		return nil, fmt.Errorf("%w: grub-mkimage (install grub-efi-amd64-bin)", ErrMissingBinary)
	}
	if modDir == "" {
		modDir = "/usr/lib/grub/x86_64-efi"
	}
	if _, err := os.Stat(filepath.Join(modDir, "kernel.img")); err != nil {
		return nil, fmt.Errorf("%w: %s (install grub-efi-amd64-bin)", ErrMissingBinary, modDir)
	}
	td, err := tmpdir.New(tmpDir, "grub")
	if err != nil {
		return nil, err
	}
	defer td.Remove()
	dir := td.Path
	early := grubEFIEarlyConfig()
	cfg := filepath.Join(dir, "early.cfg")
	if err := os.WriteFile(cfg, []byte(early), 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(dir, "grubx64.efi")
	args := append([]string{"-O", "x86_64-efi", "-d", modDir, "-p", Dir, "-c", cfg, "-o", out}, grubEFIModules...)
	if b, err := exec.CommandContext(ctx, "grub-mkimage", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("grub-mkimage: %w: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("grub-mkimage wrote no image")
	}
	return b, err
}

// grubEFIEarlyConfig is the same for every disk, so the image can carry
// the GRUB binary: the ESP is the partition that holds imprint's grub.cfg.
func grubEFIEarlyConfig() string {
	return "search --no-floppy --file --set=root " + GrubCfg + "\nset prefix=($root)" + Dir + "\nconfigfile ($root)" + GrubCfg + "\necho \"imprint: cannot read " + GrubCfg + "\"\n"
}
