package bootloader

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/tmpdir"
	"github.com/imprint-dev/imprint/layout"
)

// Legacy BIOS boot through GRUB i386-pc, done the way grub-bios-setup (GRUB
// 2.06 util/setup.c) does it for a GPT disk with a BIOS boot partition, but
// from Go: grub-install needs udev to find the disk, and imprint writes to
// image files and unpartitioned views of disks where there is nothing to
// find. grub-mkimage runs at build time only (BuildGrubBIOS; the image
// carries boot.img and core.img as loaders); the per-disk patching of both
// is done here at deploy.
//
// The boot chain: the BIOS runs boot.img from the MBR; boot.img reads the
// one sector at its "kernel sector" field (the first sector of core.img, which
// is diskboot.img); diskboot.img reads the rest of core.img from the
// blocklist in its own last bytes; core.img runs its embedded config, which
// finds the ESP by the config file on it and hands over to that config.

// Sentinel errors callers act on.
var (
	// ErrNoBIOSBoot says there is no usable BIOS boot partition: none in
	// the layout, a partition of another type, or one the disk's GPT does
	// not have.
	ErrNoBIOSBoot = errors.New("no BIOS boot partition")
	// ErrBIOSBootTooSmall says core.img does not fit in the BIOS boot
	// partition.
	ErrBIOSBootTooSmall = errors.New("BIOS boot partition too small for core.img")
	// ErrGrubPCMissing says the GRUB i386-pc tools or files are not installed.
	ErrGrubPCMissing = errors.New("GRUB for i386-pc (legacy BIOS) is not installed")
)

// BIOSOptions carry GRUB's i386-pc images as the image holds them
// (image.LoaderGrubBIOSBoot, image.LoaderGrubBIOSCore): made at build time
// by BuildGrubBIOS, unpatched. InstallBIOS patches copies for this disk.
type BIOSOptions struct {
	BootImg []byte // boot.img, 512 bytes
	CoreImg []byte // core.img as grub-mkimage made it
}

// GrubBIOSBuild says how to make the i386-pc images at build time.
type GrubBIOSBuild struct {
	// ConfigPath is the GRUB configuration on the ESP, absolute, e.g.
	// "/EFI/imprint/grub.cfg" (GrubCfg, which WriteMenu writes): the
	// embedded early config finds the partition holding it, so the image
	// needs no per-disk value.
	ConfigPath string
	// GrubDir holds boot.img, kernel.img and the modules; default
	// /usr/lib/grub/i386-pc.
	GrubDir string
	// TmpDir is where core.img is built; default os.TempDir().
	TmpDir string
}

// Offsets and values from GRUB 2.06 include/grub/i386/pc/boot.h and
// kernel.h. They have not changed since GRUB 2.00; InstallBIOS checks the
// images still look like that before patching them.
const (
	biosSector = 512 // GRUB_DISK_SECTOR_SIZE: boot.img and blocklists count in it

	biosBPBStart     = 0x03  // GRUB_BOOT_MACHINE_BPB_START
	biosBPBEnd       = 0x5a  // GRUB_BOOT_MACHINE_BPB_END
	biosKernelSector = 0x5c  // GRUB_BOOT_MACHINE_KERNEL_SECTOR, u64 LBA
	biosBootDrive    = 0x64  // GRUB_BOOT_MACHINE_BOOT_DRIVE
	biosDriveCheck   = 0x66  // GRUB_BOOT_MACHINE_DRIVE_CHECK, a 2-byte jmp
	biosNTMagic      = 0x1b8 // GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC: disk signature, then the table
	biosListSize     = 12    // GRUB_BOOT_MACHINE_LIST_SIZE: {u64 start, u16 len, u16 segment}
	biosKernelSeg    = 0x800 // GRUB_BOOT_I386_PC_KERNEL_SEG: diskboot.img is loaded here

	// The rest of core.img is loaded right after diskboot.img: the segment
	// grub-mkimage puts in the first blocklist entry and grub-setup keeps.
	biosListSeg = biosKernelSeg + biosSector>>4

	// In core.img's second sector (the kernel's header).
	biosRSRedundancy = 0x10 // GRUB_KERNEL_I386_PC_REED_SOLOMON_REDUNDANCY, u32
	biosNoRSLength   = 0x14 // GRUB_KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH, u16

	// core.img is loaded from 0x8000 (diskboot) and must end below 0x78000;
	// grub-setup caps the embedded image at (0x78000-0x9000)/512 sectors.
	biosMaxCoreSectors = (0x78000 - 0x9000) / biosSector

	biosDefaultGrubDir = "/usr/lib/grub/i386-pc"
)

// biosModules are built into core.img, since the ESP holds no i386-pc
// module directory: the disk and GPT access and search for the early
// config, plus what the shared grub.cfg (renderGrub, with load_env and
// save_env for boot counting) and test configs use.
func biosModules() []string {
	return []string{
		"biosdisk", "part_gpt", "part_msdos", "fat",
		"search", "search_fs_file", "search_fs_uuid", "search_label",
		"normal", "configfile", "echo", "test", "sleep", "loadenv",
		"serial", "terminal",
		"linux", "linux16", "boot", "halt", "reboot",
	}
}

// InstallBIOS makes dev boot GRUB under legacy BIOS: it writes o.CoreImg,
// its blocklist patched, to the start of the BIOS boot partition biosBoot,
// and o.BootImg, its kernel-sector field patched, into the MBR's boot code
// area (bytes 0..439), keeping the disk signature and the partition table.
// The GPT must already be on dev. Nothing is built here: a node needs no
// grub-mkimage.
func InstallBIOS(ctx context.Context, dev disk.Device, biosBoot layout.Placed, o BIOSOptions) error {
	if err := biosCheckTarget(dev, biosBoot); err != nil {
		return err
	}
	if o.BootImg == nil || o.CoreImg == nil {
		return fmt.Errorf("%w: the image carries no %s and %s; build it on a host with grub-pc-bin, or give them with imprint build --loader", ErrGrubPCMissing, image.LoaderGrubBIOSBoot, image.LoaderGrubBIOSCore)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return biosWrite(dev, biosBoot, o.CoreImg, o.BootImg)
}

// BuildGrubBIOS makes GRUB's i386-pc boot.img and core.img (with its
// embedded early config) with grub-mkimage, as the image stores them.
func BuildGrubBIOS(ctx context.Context, o GrubBIOSBuild) (bootImg, coreImg []byte, err error) {
	if o.GrubDir == "" {
		o.GrubDir = biosDefaultGrubDir
	}
	core, err := biosBuildCore(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	bootImg, err = os.ReadFile(filepath.Join(o.GrubDir, "boot.img"))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read boot.img (install grub-pc-bin): %w", ErrGrubPCMissing, err)
	}
	if err := CheckGrubBootImg(bootImg); err != nil {
		return nil, nil, err
	}
	return bootImg, core, nil
}

// CheckGrubBootImg says whether b is GRUB 2's i386-pc boot sector as
// biosWrite patches it.
func CheckGrubBootImg(b []byte) error {
	if len(b) != biosSector || b[0] != 0xeb || b[biosBootDrive] != 0xff ||
		(b[biosDriveCheck] != 0xeb && b[biosDriveCheck] != 0x90) ||
		b[510] != 0x55 || b[511] != 0xaa {
		return fmt.Errorf("boot.img (%d bytes) is not GRUB 2's i386-pc boot sector as imprint knows it", len(b))
	}
	return nil
}

// biosCheckTarget refuses to write unless biosBoot is a BIOS boot partition
// that the disk's own GPT has at the same place: core.img overwrites the
// partition's start, so a stale or hand-made Placed must not point at data.
func biosCheckTarget(dev disk.Device, p layout.Placed) error {
	if p.Len == 0 && p.Start == 0 {
		return fmt.Errorf("%w: the layout has none; add a 1 MiB partition of type bios-boot (%s) for legacy BIOS boot", ErrNoBIOSBoot, layout.TypeBIOSBoot)
	}
	if !strings.EqualFold(p.Type, layout.TypeBIOSBoot) {
		return fmt.Errorf("%w: partition %q has type %s, not bios-boot (%s)", ErrNoBIOSBoot, p.Name, layout.TypeName(p.Type), layout.TypeBIOSBoot)
	}
	// boot.img and the blocklists address 512-byte sectors and BIOS
	// int 13h booting from 4Kn disks is not something GRUB supports.
	if ss := dev.SectorSize(); ss != biosSector {
		return fmt.Errorf("legacy BIOS boot needs 512-byte sectors; this disk has %d-byte sectors", ss)
	}
	if p.Start <= 0 || p.Start%biosSector != 0 || p.Len <= 0 || p.Start+p.Len > dev.Size() {
		return fmt.Errorf("%w: partition %q at byte %d, %d bytes, is not a whole-sector range on a %d-byte disk", ErrNoBIOSBoot, p.Name, p.Start, p.Len, dev.Size())
	}
	_, parts, err := disk.ReadGPT(dev)
	if err != nil {
		return fmt.Errorf("read the disk's GPT before installing GRUB for BIOS: %w", err)
	}
	found := false
	for _, g := range parts {
		if g.Start == p.Start && g.Len == p.Len && strings.EqualFold(g.Type, layout.TypeBIOSBoot) {
			found = true
			break
		}
	}
	if !found {
		return fmt.Errorf("%w: the disk's GPT has no bios-boot partition at byte %d with %d bytes (partition %q); write the partition table first", ErrNoBIOSBoot, p.Start, p.Len, p.Name)
	}
	return nil
}

// biosConfigPathOK limits ConfigPath to characters that need no quoting in
// GRUB's rescue-mode parser, which runs the embedded config, and that a FAT
// long name holds.
func biosConfigPathOK(p string) bool {
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" {
		return false
	}
	for _, c := range p {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("/._-+", c):
		default:
			return false
		}
	}
	return true
}

// biosEarlyConfig is embedded in core.img. GRUB runs it with the rescue
// parser (no if/then), one line after the other, printing any error; so
// the lines after configfile run only when it failed or returned, and
// then say what went wrong. Serial output is switched on only in that
// case, so a headless machine shows the reason on its serial console too,
// and machines that boot never have their COM port touched by this config.
func biosEarlyConfig(configPath string) string {
	return fmt.Sprintf(`search --no-floppy --file --set=root %[1]s
configfile ($root)%[1]s
serial --unit=0 --speed=115200
terminal_output --append serial
echo "imprint: GRUB (BIOS) could not load %[1]s: no partition holds it, or it did not boot (see the errors above). Check the ESP; dropping to the GRUB shell."
`, configPath)
}

// biosMkimage finds grub-mkimage (Fedora calls it grub2-mkimage).
func biosMkimage() (string, error) {
	var firstErr error
	for _, name := range []string{"grub-mkimage", "grub2-mkimage"} {
		p, err := exec.LookPath(name)
		if err == nil {
			return p, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return "", fmt.Errorf("%w: grub-mkimage not found in PATH; install grub-pc-bin (Debian/Ubuntu; it brings grub-common with grub-mkimage) or grub2-pc (Fedora): %w", ErrGrubPCMissing, firstErr)
}

// biosBuildCore runs grub-mkimage and returns core.img as built, before
// any blocklist patching.
func biosBuildCore(ctx context.Context, o GrubBIOSBuild) ([]byte, error) {
	if o.GrubDir == "" {
		o.GrubDir = biosDefaultGrubDir
	}
	if !biosConfigPathOK(o.ConfigPath) {
		return nil, fmt.Errorf("BIOS GRUB config path %q: want an absolute, clean path of letters, digits and /._-+ on the ESP, e.g. /EFI/imprint/grub.cfg", o.ConfigPath)
	}
	mkimage, err := biosMkimage()
	if err != nil {
		return nil, err
	}
	// grub-mkimage only says "cannot open ... No such file"; name the
	// package instead.
	for _, f := range []string{"boot.img", "diskboot.img", "kernel.img", "moddep.lst"} {
		if _, err := os.Stat(filepath.Join(o.GrubDir, f)); err != nil {
			return nil, fmt.Errorf("%w: %s has no %s; install grub-pc-bin or set the GRUB i386-pc directory: %w", ErrGrubPCMissing, o.GrubDir, f, err)
		}
	}
	td, err := tmpdir.New(o.TmpDir, "grub_bios")
	if err != nil {
		return nil, fmt.Errorf("temporary directory for core.img: %w", err)
	}
	defer td.Remove()
	tmp := td.Path
	cfg := filepath.Join(tmp, "early.cfg")
	if err := os.WriteFile(cfg, []byte(biosEarlyConfig(o.ConfigPath)), 0o644); err != nil {
		return nil, fmt.Errorf("write GRUB early config: %w", err)
	}
	out := filepath.Join(tmp, "core.img")
	// The prefix points at the config's directory without a device: GRUB
	// resolves it on the boot disk itself, where no filesystem is, so after
	// a failed early config normal mode finds nothing to run a second time
	// and gives its shell.
	args := append([]string{
		"-O", "i386-pc", "-d", o.GrubDir, "-o", out, "-c", cfg,
		"-p", path.Dir(o.ConfigPath),
	}, biosModules()...)
	cmd := exec.CommandContext(ctx, mkimage, args...)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("grub-mkimage -O i386-pc: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	core, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("read core.img: %w", err)
	}
	return core, nil
}

// biosWrite patches core.img and boot.img for core.img at the start of p
// and writes both, as grub-setup does when it embeds core.img in a BIOS
// boot partition without Reed-Solomon codes (grub-install --no-rs-codes):
// the partition belongs to GRUB alone, so there is nothing to repair from.
func biosWrite(dev disk.Device, p layout.Placed, core, bootImg []byte) error {
	if err := CheckGrubBootImg(bootImg); err != nil {
		return err
	}
	if len(core) <= 2*biosSector {
		return fmt.Errorf("core.img is %d bytes: too small to be a GRUB i386-pc core image", len(core))
	}
	nsec := (int64(len(core)) + biosSector - 1) / biosSector
	if nsec*biosSector > p.Len {
		return fmt.Errorf("%w: core.img needs %d bytes (%d sectors), partition %q has %d bytes", ErrBIOSBootTooSmall, nsec*biosSector, nsec, p.Name, p.Len)
	}
	if nsec > biosMaxCoreSectors {
		return fmt.Errorf("core.img is %d sectors; BIOS GRUB loads at most %d below 0x78000: build it with fewer modules", nsec, biosMaxCoreSectors)
	}
	kernel := core[biosSector:]
	if binary.LittleEndian.Uint16(kernel[biosNoRSLength:]) == 0xffff {
		return fmt.Errorf("core.img version mismatch: its kernel has no Reed-Solomon length (grub-setup says the same); is it from another GRUB than boot.img?")
	}
	// A non-zero redundancy would make GRUB decode Reed-Solomon codes we
	// did not write.
	if binary.LittleEndian.Uint32(kernel[biosRSRedundancy:]) != 0 {
		return fmt.Errorf("core.img asks for Reed-Solomon redundancy; imprint writes none")
	}
	first := uint64(p.Start / biosSector)
	last := biosSector - biosListSize
	// diskboot.img's first list entry must carry grub-mkimage's load segment;
	// anything else means this is not a disk core.img (e.g. -O i386-pc-pxe).
	if seg := binary.LittleEndian.Uint16(core[last+10:]); seg != biosListSeg {
		return fmt.Errorf("core.img's first sector is not diskboot.img (blocklist segment %#x, want %#x)", seg, biosListSeg)
	}

	img := make([]byte, nsec*biosSector)
	copy(img, core)
	// One extent: every sector after the first, loaded just above
	// diskboot.img. The entry before it is the terminator (len 0).
	binary.LittleEndian.PutUint64(img[last:], first+1)
	binary.LittleEndian.PutUint16(img[last+8:], uint16(nsec-1))
	binary.LittleEndian.PutUint16(img[last+10:], biosListSeg)
	clear(img[last-biosListSize : last])

	mbr := make([]byte, biosSector)
	if _, err := dev.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("read the MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return fmt.Errorf("%w: sector 0 has no 55AA signature (no protective MBR); write the partition table first", ErrNoBIOSBoot)
	}
	boot := bytes.Clone(bootImg)
	// grub-setup keeps whatever BPB bytes the disk had; boot.img jumps over
	// them, so this only keeps imprint's result identical to grub-setup's.
	copy(boot[biosBPBStart:biosBPBEnd], mbr[biosBPBStart:biosBPBEnd])
	binary.LittleEndian.PutUint64(boot[biosKernelSector:], first)
	// 0xff: use the drive number the BIOS passes in DL.
	boot[biosBootDrive] = 0xff
	// A hard disk: nop the jump over the check that maps a bogus DL (0x00
	// or 0x01 from buggy BIOSes) to 0x80, as grub-setup does for non-floppies.
	boot[biosDriveCheck] = 0x90
	boot[biosDriveCheck+1] = 0x90

	// core.img first and synced, then the MBR: until the MBR points at the
	// new core.img, a crash leaves the previous boot code (if any) in place
	// rather than an MBR pointing at a half-written core.img.
	if _, err := dev.WriteAt(img, p.Start); err != nil {
		return fmt.Errorf("write core.img to partition %q: %w", p.Name, err)
	}
	if err := biosSync(dev); err != nil {
		return err
	}
	// Only the boot code: the disk signature (440..445) and the partition
	// table with its 55AA (446..511) stay the disk's own.
	if _, err := dev.WriteAt(boot[:biosNTMagic], 0); err != nil {
		return fmt.Errorf("write boot.img to the MBR: %w", err)
	}
	return biosSync(dev)
}

// biosSync flushes devices that can be flushed (disk.Disk can).
func biosSync(dev disk.Device) error {
	if s, ok := dev.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
	}
	return nil
}
