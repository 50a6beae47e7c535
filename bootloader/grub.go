package bootloader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// grubEFIModules are built into the GRUB EFI image, so it needs nothing
// from the ESP but its configuration.
var grubEFIModules = []string{
	"part_gpt", "part_msdos", "fat", "ext2", "normal", "configfile", "linux", "chain", "echo",
	"search", "search_fs_uuid", "search_fs_file", "efi_gop", "all_video", "serial", "terminal",
	"test", "boot", "sleep", "reboot", "halt", "ls", "cat", "gzio", "regexp",
}

// BuildGrubEFI makes a standalone GRUB EFI image with grub-mkimage. Its
// embedded configuration finds the ESP (by FAT volume id, else by the file)
// and reads imprint's grub.cfg there.
func BuildGrubEFI(ctx context.Context, espUUID, tmpDir string) ([]byte, error) {
	if _, err := exec.LookPath("grub-mkimage"); err != nil {
		return nil, fmt.Errorf("%w: grub-mkimage (install grub-efi-amd64-bin)", ErrMissingBinary)
	}
	modDir := "/usr/lib/grub/x86_64-efi"
	if _, err := os.Stat(modDir); err != nil {
		return nil, fmt.Errorf("%w: %s (install grub-efi-amd64-bin)", ErrMissingBinary, modDir)
	}
	dir, err := os.MkdirTemp(tmpDir, "imprint-grub-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	search := "search --no-floppy --file --set=root " + GrubCfg
	if espUUID != "" {
		search = "search --no-floppy --fs-uuid --set=root " + espUUID + " || " + search
	}
	early := search + "\nset prefix=($root)" + Dir + "\nconfigfile ($root)" + GrubCfg + "\necho \"imprint: cannot read " + GrubCfg + "\"\n"
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
