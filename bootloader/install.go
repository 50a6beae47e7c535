package bootloader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// Loaders and firmware kinds.
const (
	SystemdBoot = "systemd-boot"
	Grub        = "grub"

	UEFI = "uefi"
	BIOS = "bios"
	Both = "both"
)

// Default locations of the loader binaries (Debian packages
// systemd-boot-efi, ipxe).
const (
	DefaultSystemdBoot = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
	DefaultIPXEEFI     = "/usr/lib/ipxe/ipxe.efi"
	DefaultIPXELkrn    = "/usr/lib/ipxe/ipxe.lkrn"
	fallbackLoader     = "/EFI/BOOT/BOOTX64.EFI"
)

// ErrMissingBinary says a loader binary is not installed.
var ErrMissingBinary = errors.New("boot loader binary not found")

// InstallOptions describe one bootloader installation.
type InstallOptions struct {
	Loader   string // SystemdBoot (default) or Grub
	Firmware string // UEFI, BIOS or Both; decides whether the UEFI loader is written
	// NewESP says imprint just made this ESP: the removable-media fallback
	// loader \EFI\BOOT\BOOTX64.EFI may then be replaced. On an ESP that
	// other systems use it is only written when absent.
	NewESP    bool
	EFIBinary string // systemd-boot binary (default DefaultSystemdBoot)

	Name, Version string // the image, for titles and the kernel directory
	Kernel        []byte
	Initrd        []byte
	Cmdline       string // the image's own command line
	RootPARTUUID  string

	DisklessURL string // adds the diskless entry when set
	AgentInitrd []byte // the agent initramfs; nil uses the image's initrd
	TrustKey    string // minisign public key the diskless agent demands (imprint.trust=)
	NetbootURL  string // server URL for the netboot entry's script
	NoNetboot   bool
	IPXEEFI     string // default DefaultIPXEEFI
	IPXELkrn    string // default DefaultIPXELkrn

	Default string // default entry id (default "local")
	Timeout int
	ESPUUID string
	TmpDir  string
}

// Install writes the UEFI loader, kernels and entries onto the ESP and
// returns the menu it wrote. The BIOS part (which writes outside the ESP)
// is InstallBIOS. Entries a user added earlier are kept.
func Install(ctx context.Context, f FS, o InstallOptions) (*Menu, error) {
	if o.Loader == "" {
		o.Loader = SystemdBoot
	}
	if o.Firmware == "" {
		o.Firmware = UEFI
	}
	if o.Loader != SystemdBoot && o.Loader != Grub {
		return nil, fmt.Errorf("unknown boot loader %q (want systemd-boot or grub)", o.Loader)
	}
	if o.Kernel == nil {
		return nil, fmt.Errorf("the image has no kernel: build it with --kernel or a /boot/vmlinuz-* in the root tree")
	}
	old, err := ReadMenu(f)
	if err != nil && !errors.Is(err, ErrNoMenu) {
		return nil, err
	}
	if o.Firmware != BIOS {
		if err := installUEFILoader(ctx, f, o); err != nil {
			return nil, err
		}
	}

	kdir := path.Join(Dir, o.Version)
	kernel, initrd := path.Join(kdir, "vmlinuz"), path.Join(kdir, "initrd.img")
	if err := writeNew(f, kernel, o.Kernel); err != nil {
		return nil, err
	}
	var initrds []string
	if o.Initrd != nil {
		if err := writeNew(f, initrd, o.Initrd); err != nil {
			return nil, err
		}
		initrds = []string{initrd}
	}
	title := o.Name + " " + o.Version
	m := &Menu{Loader: o.Loader, Firmware: o.Firmware, Timeout: o.Timeout, ESPUUID: o.ESPUUID, Default: o.Default}
	if m.Default == "" {
		m.Default = TypeLocal
	}
	m.Entries = append(m.Entries, Entry{
		ID: TypeLocal, Type: TypeLocal, Title: "imprint: " + title + " (local disk)", Version: o.Version,
		Linux: kernel, Initrd: initrds, Options: strings.TrimSpace("root=PARTUUID=" + strings.ToLower(o.RootPARTUUID) + " " + o.Cmdline),
	})
	// The agent goes onto the ESP even without a diskless entry: with it
	// the disk carries every file of its image and can be served or
	// exported whole (imprint serve --disk, imprint export).
	agent := path.Join(kdir, "agent.img")
	if o.AgentInitrd != nil {
		if err := writeNew(f, agent, o.AgentInitrd); err != nil {
			return nil, err
		}
	}
	if o.DisklessURL != "" {
		opts := disklessCmdline(o.Cmdline) + " imprint.source=" + o.DisklessURL + " imprint.image=" + o.Name + ":" + o.Version
		if o.TrustKey != "" {
			opts += " imprint.trust=" + o.TrustKey
		}
		e := Entry{ID: TypeDiskless, Type: TypeDiskless, Title: "imprint: " + title + " (diskless, from the network)", Version: o.Version,
			Linux: kernel, Initrd: initrds, Options: strings.TrimSpace(opts)}
		if o.AgentInitrd != nil {
			e.Initrd = []string{agent}
		}
		m.Entries = append(m.Entries, e)
	}
	if !o.NoNetboot {
		e, err := installNetboot(f, o)
		if err != nil {
			return nil, err
		}
		m.Entries = append(m.Entries, e)
	}
	chain, err := FindOtherLoaders(f)
	if err != nil {
		return nil, err
	}
	m.Entries = append(m.Entries, chain...)
	if old != nil {
		for _, e := range old.Entries {
			if _, dup := m.Find(e.ID); !dup && e.Type == "" {
				m.Entries = append(m.Entries, e) // added by hand with imprint boot add
			}
		}
	}
	if err := WriteMenu(f, m); err != nil {
		return nil, err
	}
	return m, nil
}

// disklessCmdline drops root= from the image's command line: the agent
// decides where the root comes from.
func disklessCmdline(c string) string {
	var keep []string
	for _, w := range strings.Fields(c) {
		if !strings.HasPrefix(w, "root=") {
			keep = append(keep, w)
		}
	}
	return strings.Join(keep, " ")
}

func readBinary(p, what string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (%s); install its Debian package or point at one", ErrMissingBinary, p, what)
	}
	return b, err
}

func installUEFILoader(ctx context.Context, f FS, o InstallOptions) error {
	var bin []byte
	var own string
	switch o.Loader {
	case SystemdBoot:
		p := o.EFIBinary
		if p == "" {
			p = DefaultSystemdBoot
		}
		b, err := readBinary(p, "systemd-boot, package systemd-boot-efi")
		if err != nil {
			return err
		}
		bin, own = b, "/EFI/systemd/systemd-bootx64.efi"
	case Grub:
		b, err := BuildGrubEFI(ctx, o.ESPUUID, o.TmpDir)
		if err != nil {
			return err
		}
		bin, own = b, path.Join(Dir, "grubx64.efi")
	}
	if err := writeNew(f, own, bin); err != nil {
		return err
	}
	if _, exists := findCI(f, fallbackLoader); !exists || o.NewESP {
		if err := writeNew(f, fallbackLoader, bin); err != nil {
			return err
		}
	}
	return nil
}

// installNetboot puts iPXE on the ESP. With a server URL, a script that
// chains to it is written beside iPXE (newer iPXE builds run
// autoexec.ipxe; Debian's 2019 build ignores it and boots by DHCP, where
// imprint serve hands out the same script URL).
func installNetboot(f FS, o InstallOptions) (Entry, error) {
	efiSrc, lkrnSrc := o.IPXEEFI, o.IPXELkrn
	if efiSrc == "" {
		efiSrc = DefaultIPXEEFI
	}
	if lkrnSrc == "" {
		lkrnSrc = DefaultIPXELkrn
	}
	e := Entry{ID: TypeNetboot, Type: TypeNetboot, Title: "imprint: boot from the network (iPXE)"}
	efi, err := readBinary(efiSrc, "iPXE, package ipxe")
	if err != nil {
		return e, err
	}
	e.EFI = path.Join(Dir, "ipxe.efi")
	if err := writeNew(f, e.EFI, efi); err != nil {
		return e, err
	}
	if lkrn, err := readBinary(lkrnSrc, "iPXE, package ipxe"); err == nil {
		e.BIOSLinux = path.Join(Dir, "ipxe.lkrn")
		if err := writeNew(f, e.BIOSLinux, lkrn); err != nil {
			return e, err
		}
	}
	script := "#!ipxe\ndhcp\n"
	if o.NetbootURL != "" {
		script += "chain " + strings.TrimRight(o.NetbootURL, "/") + "/boot.ipxe?mac=${net0/mac} || shell\n"
		e.Title += " from " + o.NetbootURL
	} else {
		script += "autoboot || shell\n"
	}
	if err := writeNew(f, path.Join(Dir, "autoexec.ipxe"), []byte(script)); err != nil {
		return e, err
	}
	if e.BIOSLinux != "" {
		e.BIOSInitrd = path.Join(Dir, "autoexec.ipxe")
	}
	return e, nil
}

// knownLoaders are other systems' boot loaders worth a chainload entry, in
// order of preference within one vendor directory.
var knownLoaders = []string{"bootmgfw.efi", "shimx64.efi", "grubx64.efi", "systemd-bootx64.efi"}

// FindOtherLoaders lists the boot loaders of other operating systems on
// the ESP (\EFI\<vendor>\...), one chainload entry per vendor directory.
func FindOtherLoaders(f FS) ([]Entry, error) {
	efiDir, ok := findCI(f, "/EFI")
	if !ok {
		return nil, nil
	}
	vendors, err := f.ReadDir(efiDir)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, v := range vendors {
		name := v.Name()
		switch strings.ToLower(name) {
		case "boot", "imprint", "systemd", "linux":
			continue
		}
		if !v.IsDir() {
			continue
		}
		var found string
		for _, l := range knownLoaders {
			for _, sub := range []string{"", "Boot"} {
				if p, ok := findCI(f, path.Join(efiDir, name, sub, l)); ok && found == "" {
					found = p
				}
			}
		}
		if found == "" {
			continue
		}
		id := "chainload-" + strings.Trim(strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
				return r
			case r >= 'A' && r <= 'Z':
				return r + 32
			}
			return '-'
		}, name), "-")
		title := name
		if strings.EqualFold(name, "Microsoft") {
			title = "Windows"
		}
		out = append(out, Entry{ID: id, Type: TypeChainload, Title: title + " (" + found + ")", EFI: found})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
