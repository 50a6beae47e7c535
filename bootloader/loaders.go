package bootloader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/imprint-dev/imprint/image"
)

// LoaderIPXELkrn is iPXE as a Linux kernel, which GRUB starts for the
// netboot entry under legacy BIOS. It lands on the ESP, so the image carries
// it like the loaders image names.
const LoaderIPXELkrn = image.LoaderIPXELkrn

// ErrNoLoader says the image does not carry a loader binary the chosen boot
// setup needs. Loaders come from the image only, never from the host that
// deploys: they are signed with the manifest.
var ErrNoLoader = errors.New("the image carries no such boot loader binary")

// hostLoader is where a build finds one loader on a Debian host.
type hostLoader struct {
	name string
	path string // under the host root; "" for the GRUB images, which are built
	pkg  string // Debian package
	use  string // what a deploy can not do without it
}

func hostLoaders() []hostLoader {
	return []hostLoader{
		{image.LoaderSystemdBoot, "usr/lib/systemd/boot/efi/systemd-bootx64.efi", "systemd-boot-efi", "--bootloader systemd-boot"},
		{image.LoaderGrubEFI, "", "grub-efi-amd64-bin", "--bootloader grub under UEFI"},
		{image.LoaderGrubBIOSBoot, "", "grub-pc-bin", "legacy BIOS boot (--firmware bios or both)"},
		{image.LoaderGrubBIOSCore, "", "grub-pc-bin", "legacy BIOS boot (--firmware bios or both)"},
		{image.LoaderIPXEEFI, "usr/lib/ipxe/ipxe.efi", "ipxe", "the netboot entry and UEFI PXE clients of imprint serve"},
		{LoaderIPXELkrn, "usr/lib/ipxe/ipxe.lkrn", "ipxe", "the netboot entry under legacy BIOS"},
		{image.LoaderIPXEBIOS, "usr/lib/ipxe/undionly.kpxe", "ipxe", "legacy BIOS PXE clients of imprint serve"},
	}
}

// LoaderNames are the loader binaries imprint knows, in the order a build
// collects them.
func LoaderNames() []string {
	var out []string
	for _, l := range hostLoaders() {
		out = append(out, l.name)
	}
	return out
}

// CollectOptions say where a build finds the loader binaries.
type CollectOptions struct {
	// Files are loaders given by the user (NAME=FILE); they win over the
	// host's.
	Files map[string]string
	// Root is the root of the host's Debian packages ("" is /).
	Root   string
	TmpDir string
}

// CollectLoaders gathers the loader binaries an image carries: given files
// first, else the build host's Debian packages; the GRUB images are made here
// with grub-mkimage, with an early config that needs no per-disk value. A
// loader the host lacks is left out, with a note saying what images built
// here then cannot do.
func CollectLoaders(ctx context.Context, o CollectOptions) (loaders map[string][]byte, notes []string, err error) {
	known := map[string]hostLoader{}
	for _, l := range hostLoaders() {
		known[l.name] = l
	}
	for name := range o.Files {
		if _, ok := known[name]; !ok {
			return nil, nil, fmt.Errorf("--loader %s: unknown loader name; imprint knows %s", name, strings.Join(LoaderNames(), ", "))
		}
	}
	root := o.Root
	if root == "" {
		root = "/"
	}
	loaders = map[string][]byte{}
	for name, file := range o.Files {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, nil, fmt.Errorf("--loader %s=%s: %w", name, file, err)
		}
		if err := checkLoader(name, b); err != nil {
			return nil, nil, fmt.Errorf("--loader %s=%s: %w", name, file, err)
		}
		loaders[name] = b
	}
	missing := func(l hostLoader, why string) {
		notes = append(notes, fmt.Sprintf("no %s on this host (%s; Debian package %s): the image carries none, so deploying it cannot use %s; add it with --loader %s=FILE", l.name, why, l.pkg, l.use, l.name))
	}
	for _, l := range hostLoaders() {
		if _, given := loaders[l.name]; given || l.path == "" {
			continue
		}
		p := filepath.Join(root, l.path)
		b, err := os.ReadFile(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			missing(l, p+" does not exist")
			continue
		case err != nil:
			return nil, nil, fmt.Errorf("loader %s: %w", l.name, err)
		}
		if err := checkLoader(l.name, b); err != nil {
			return nil, nil, fmt.Errorf("loader %s from %s: %w", l.name, p, err)
		}
		loaders[l.name] = b
	}
	if _, given := loaders[image.LoaderGrubEFI]; !given {
		b, err := BuildGrubEFI(ctx, filepath.Join(root, "usr/lib/grub/x86_64-efi"), o.TmpDir)
		switch {
		case errors.Is(err, ErrMissingBinary):
			missing(known[image.LoaderGrubEFI], err.Error())
		case err != nil:
			return nil, nil, fmt.Errorf("loader %s: %w", image.LoaderGrubEFI, err)
		default:
			loaders[image.LoaderGrubEFI] = b
		}
	}
	_, haveBoot := loaders[image.LoaderGrubBIOSBoot]
	_, haveCore := loaders[image.LoaderGrubBIOSCore]
	if !haveBoot || !haveCore {
		boot, core, err := BuildGrubBIOS(ctx, GrubBIOSBuild{ConfigPath: GrubCfg, GrubDir: filepath.Join(root, "usr/lib/grub/i386-pc"), TmpDir: o.TmpDir})
		switch {
		case errors.Is(err, ErrGrubPCMissing):
			for _, n := range []string{image.LoaderGrubBIOSBoot, image.LoaderGrubBIOSCore} {
				if _, ok := loaders[n]; !ok {
					missing(known[n], err.Error())
				}
			}
		case err != nil:
			return nil, nil, fmt.Errorf("GRUB for BIOS: %w", err)
		default:
			if !haveBoot {
				loaders[image.LoaderGrubBIOSBoot] = boot
			}
			if !haveCore {
				loaders[image.LoaderGrubBIOSCore] = core
			}
		}
	}
	return loaders, notes, nil
}

// checkLoader catches a wrong file given for a loader name before it is
// signed into an image.
func checkLoader(name string, b []byte) error {
	if len(b) > image.MaxLoaderSize {
		return fmt.Errorf("%d bytes; a loader may have at most %d", len(b), image.MaxLoaderSize)
	}
	switch name {
	case image.LoaderSystemdBoot, image.LoaderGrubEFI, image.LoaderIPXEEFI:
		if !bytes.HasPrefix(b, []byte("MZ")) {
			return fmt.Errorf("not an EFI (PE) binary: it does not start with MZ")
		}
	case image.LoaderGrubBIOSBoot:
		return CheckGrubBootImg(b)
	case image.LoaderGrubBIOSCore:
		if len(b) <= 2*biosSector {
			return fmt.Errorf("%d bytes: too small to be a GRUB i386-pc core image", len(b))
		}
	}
	if len(b) == 0 {
		return fmt.Errorf("empty file")
	}
	return nil
}
