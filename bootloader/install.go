package bootloader

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/imprint-dev/imprint/image"
)

// Loaders and firmware kinds.
const (
	SystemdBoot = "systemd-boot"
	Grub        = "grub"

	UEFI = "uefi"
	BIOS = "bios"
	Both = "both"
)

// Where the UEFI loaders are installed on the ESP.
const (
	fallbackLoader  = "/EFI/BOOT/BOOTX64.EFI"
	systemdBootPath = "/EFI/systemd/systemd-bootx64.efi"
	grubEFIPath     = Dir + "/grubx64.efi"
)

// LocalOwnInitrd is the id of the entry that boots the local root with the
// image's own initrd, beside the agent's local entry.
const LocalOwnInitrd = "local-initrd"

// ErrMissingBinary says a tool or file a build needs to make a loader is
// not installed on the build host.
var ErrMissingBinary = errors.New("boot loader binary not found")

// InstallOptions describe one bootloader installation.
type InstallOptions struct {
	Loader   string // SystemdBoot (default) or Grub
	Firmware string // UEFI, BIOS or Both; decides whether the UEFI loader is written
	// NewESP says imprint just made this ESP: the removable-media fallback
	// loader \EFI\BOOT\BOOTX64.EFI may then be replaced. On an ESP that
	// other systems use it is only written when absent.
	NewESP bool
	// Loaders are the image's loader binaries by name (image.Loader*,
	// LoaderIPXELkrn), fetched and checked against its manifest. Only
	// these are written: nothing comes from the deploying host.
	Loaders map[string][]byte

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
	// Refuse a setup the image has no loader for before writing anything.
	// The BIOS loaders are InstallBIOS's.
	req, _ := NeededLoaders(o.Loader, o.Firmware, !o.NoNetboot)
	for _, name := range req {
		if name == image.LoaderGrubBIOSBoot || name == image.LoaderGrubBIOSCore {
			continue
		}
		if _, ok := o.Loaders[name]; !ok {
			return nil, MissingLoader(name, "this boot setup (boot loader "+o.Loader+", firmware "+o.Firmware+map[bool]string{true: ", netboot entry"}[!o.NoNetboot]+")")
		}
	}
	old, err := ReadMenu(f)
	if err != nil && !errors.Is(err, ErrNoMenu) {
		return nil, err
	}
	var fallback bool
	if o.Firmware != BIOS {
		if fallback, err = installUEFILoader(ctx, f, o); err != nil {
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
	m := &Menu{Loader: o.Loader, Firmware: o.Firmware, Timeout: o.Timeout, ESPUUID: o.ESPUUID, Default: o.Default, Fallback: fallback}
	if m.Default == "" {
		m.Default = TypeLocal
	}
	// The agent goes onto the ESP even without a diskless entry: with it
	// the disk carries every file of its image and can be served or
	// exported whole (imprint serve --disk, imprint export).
	agent := path.Join(kdir, "agent.img")
	if o.AgentInitrd != nil {
		if err := writeNew(f, agent, o.AgentInitrd); err != nil {
			return nil, err
		}
	}
	rootOpt := "root=PARTUUID=" + strings.ToLower(o.RootPARTUUID)
	local := Entry{
		ID: TypeLocal, Type: TypeLocal, Title: "imprint: " + title + " (local disk)", Version: o.Version,
		Linux: kernel, Initrd: initrds, Options: strings.TrimSpace(rootOpt + " " + o.Cmdline),
	}
	if o.AgentInitrd != nil {
		// The image's kernel with imprint's agent in local mode: the root
		// stays read-only and the node's identity is applied over it.
		// The image's own initrd stays as a fallback entry.
		local.Initrd = []string{agent}
		local.Options = strings.TrimSpace(rootOpt + " imprint.mode=local " + disklessCmdline(o.Cmdline))
		m.Entries = append(m.Entries, local)
		if o.Initrd != nil {
			m.Entries = append(m.Entries, Entry{
				ID: LocalOwnInitrd, Type: TypeLocal, Title: "imprint: " + title + " (local disk, the image's own initrd)", Version: o.Version,
				Linux: kernel, Initrd: initrds, Options: strings.TrimSpace(rootOpt + " " + o.Cmdline),
			})
		}
	} else {
		m.Entries = append(m.Entries, local)
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

// NeededLoaders are the loader binaries an install with o's loader,
// firmware and netboot choice writes; optional ones are written when the
// image has them.
func NeededLoaders(loader, firmware string, netboot bool) (required, optional []string) {
	if loader == "" {
		loader = SystemdBoot
	}
	if firmware != BIOS {
		if loader == Grub {
			required = append(required, image.LoaderGrubEFI)
		} else {
			required = append(required, image.LoaderSystemdBoot)
		}
	}
	if firmware == BIOS || firmware == Both {
		required = append(required, image.LoaderGrubBIOSBoot, image.LoaderGrubBIOSCore)
	}
	if netboot {
		required = append(required, image.LoaderIPXEEFI)
		optional = append(optional, LoaderIPXELkrn)
	}
	return required, optional
}

// MissingLoader is the error for a loader the image lacks, saying which
// choice needs it and how to get an image that has it.
func MissingLoader(name, choice string) error {
	pkg := "its Debian package"
	for _, l := range hostLoaders() {
		if l.name == name {
			pkg = "package " + l.pkg
		}
	}
	return fmt.Errorf("%w: %s needs %s, which this image does not carry (it was built on a host without %s): rebuild the image there with it installed, or with imprint build --loader %s=FILE, or choose another boot setup", ErrNoLoader, choice, name, pkg, name)
}

func (o InstallOptions) loader(name, choice string) ([]byte, error) {
	b, ok := o.Loaders[name]
	if !ok {
		return nil, MissingLoader(name, choice)
	}
	return b, nil
}

// installUEFILoader writes the UEFI loader, and the removable-media
// fallback copy where that is imprint's to write (wrote says so).
func installUEFILoader(ctx context.Context, f FS, o InstallOptions) (wrote bool, err error) {
	var bin []byte
	var own string
	switch o.Loader {
	case SystemdBoot:
		bin, err = o.loader(image.LoaderSystemdBoot, "boot loader systemd-boot")
		own = systemdBootPath
	case Grub:
		bin, err = o.loader(image.LoaderGrubEFI, "boot loader grub under UEFI")
		own = grubEFIPath
	}
	if err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := writeNew(f, own, bin); err != nil {
		return false, err
	}
	if _, exists := findCI(f, fallbackLoader); !exists || o.NewESP {
		if err := writeNew(f, fallbackLoader, bin); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, nil
}

// installNetboot puts iPXE on the ESP. With a server URL, a script that
// chains to it is written beside iPXE (newer iPXE builds run
// autoexec.ipxe; Debian's 2019 build ignores it and boots by DHCP, where
// imprint serve hands out the same script URL).
func installNetboot(f FS, o InstallOptions) (Entry, error) {
	e := Entry{ID: TypeNetboot, Type: TypeNetboot, Title: "imprint: boot from the network (iPXE)"}
	efi, err := o.loader(image.LoaderIPXEEFI, "the netboot entry (leave it out with --no-netboot)")
	if err != nil {
		return e, err
	}
	e.EFI = path.Join(Dir, "ipxe.efi")
	if err := writeNew(f, e.EFI, efi); err != nil {
		return e, err
	}
	if lkrn, ok := o.Loaders[LoaderIPXELkrn]; ok {
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
