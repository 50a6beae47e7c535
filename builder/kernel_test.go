package builder

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// makeTree creates entries in dir: "path" is a small file holding its own
// path (or pes[path] when given), "path -> target" a symlink, "path/" a
// directory.
func makeTree(t *testing.T, dir string, entries []string, pes map[string][]byte) {
	t.Helper()
	for _, e := range entries {
		p, target, link := strings.Cut(e, " -> ")
		full := filepath.Join(dir, filepath.FromSlash(strings.TrimSuffix(p, "/")))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case link:
			err = os.Symlink(target, full)
		case strings.HasSuffix(p, "/"):
			err = os.MkdirAll(full, 0o755)
		case pes[p] != nil:
			err = os.WriteFile(full, pes[p], 0o644)
		default:
			err = os.WriteFile(full, []byte(p), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

type peSection struct {
	name string
	data []byte
}

// makeUKI assembles a minimal PE32+ EFI application with the given sections,
// laid out as ukify does: raw sizes rounded up to the file alignment, the
// virtual size the section's own length.
func makeUKI(t *testing.T, sections ...peSection) []byte {
	t.Helper()
	const fileAlign, sectAlign = 0x200, 0x1000
	align := func(n, a uint32) uint32 { return (n + a - 1) / a * a }
	headers := uint32(0x40 + 4 + binary.Size(pe.FileHeader{}) + binary.Size(pe.OptionalHeader64{}) + len(sections)*binary.Size(pe.SectionHeader32{}))
	raw, virt := align(headers, fileAlign), uint32(sectAlign)
	var shdrs []pe.SectionHeader32
	var body bytes.Buffer
	for _, s := range sections {
		var h pe.SectionHeader32
		copy(h.Name[:], s.name)
		h.VirtualSize = uint32(len(s.data))
		h.VirtualAddress = virt
		h.SizeOfRawData = align(uint32(len(s.data)), fileAlign)
		h.PointerToRawData = raw
		h.Characteristics = pe.IMAGE_SCN_CNT_INITIALIZED_DATA | pe.IMAGE_SCN_MEM_READ
		shdrs = append(shdrs, h)
		body.Write(s.data)
		body.Write(make([]byte, h.SizeOfRawData-uint32(len(s.data))))
		raw += h.SizeOfRawData
		virt += align(uint32(len(s.data)), sectAlign)
	}
	var b bytes.Buffer
	dos := make([]byte, 0x40)
	copy(dos, "MZ")
	binary.LittleEndian.PutUint32(dos[0x3c:], 0x40)
	b.Write(dos)
	b.WriteString("PE\x00\x00")
	w := func(v any) {
		if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	w(pe.FileHeader{
		Machine: pe.IMAGE_FILE_MACHINE_AMD64, NumberOfSections: uint16(len(sections)),
		SizeOfOptionalHeader: uint16(binary.Size(pe.OptionalHeader64{})),
		Characteristics:      pe.IMAGE_FILE_EXECUTABLE_IMAGE | pe.IMAGE_FILE_LARGE_ADDRESS_AWARE,
	})
	w(pe.OptionalHeader64{
		Magic: 0x20b, SectionAlignment: sectAlign, FileAlignment: fileAlign,
		SizeOfImage: virt, SizeOfHeaders: align(headers, fileAlign),
		Subsystem: pe.IMAGE_SUBSYSTEM_EFI_APPLICATION, NumberOfRvaAndSizes: 16,
	})
	for _, h := range shdrs {
		w(h)
	}
	b.Write(make([]byte, int(align(headers, fileAlign))-b.Len()))
	b.Write(body.Bytes())
	return b.Bytes()
}

func TestFindKernelLayouts(t *testing.T) {
	uki := makeUKI(t,
		peSection{".osrel", []byte("ID=fedora\n")},
		peSection{".cmdline", []byte("root=UUID=1234 rw quiet\x00")},
		peSection{".uname", []byte("6.5.6-300.fc39.x86_64")},
		peSection{".initrd", []byte("the initrd")},
		peSection{".linux", []byte("the kernel")},
	)
	ukiNoInitrd := makeUKI(t, peSection{".linux", []byte("the kernel")})
	notUKI := makeUKI(t, peSection{".text", []byte("a boot loader")})
	for _, tc := range []struct {
		name    string
		tree    []string
		pes     map[string][]byte
		kernel  string // TreeFile.String()
		initrd  string // "" none
		cmdline string
	}{
		{
			name: "Debian versioned with top-level links",
			tree: []string{
				"boot/vmlinuz-6.1.0-28-amd64", "boot/initrd.img-6.1.0-28-amd64", "boot/config-6.1.0-28-amd64",
				"vmlinuz -> boot/vmlinuz-6.1.0-28-amd64", "initrd.img -> boot/initrd.img-6.1.0-28-amd64",
			},
			kernel: "/boot/vmlinuz-6.1.0-28-amd64", initrd: "/boot/initrd.img-6.1.0-28-amd64",
		},
		{
			name: "newest version, numeric-aware, backups skipped",
			tree: []string{
				"boot/vmlinuz-6.1.0-9-amd64", "boot/initrd.img-6.1.0-9-amd64",
				"boot/vmlinuz-6.1.0-28-amd64", "boot/initrd.img-6.1.0-28-amd64",
				"boot/vmlinuz-6.10.1-amd64", "boot/initrd.img-6.10.1-amd64",
				"boot/vmlinuz-6.2.0-1-amd64", "boot/initrd.img-6.2.0-1-amd64",
				"boot/vmlinuz-6.11.0-amd64.dpkg-tmp", "boot/vmlinuz-7.0.old",
			},
			kernel: "/boot/vmlinuz-6.10.1-amd64", initrd: "/boot/initrd.img-6.10.1-amd64",
		},
		{
			name:   "plain /boot/vmlinuz and /boot/initrd.img files",
			tree:   []string{"boot/vmlinuz", "boot/initrd.img", "boot/grub/"},
			kernel: "/boot/vmlinuz", initrd: "/boot/initrd.img",
		},
		{
			name: "plain /boot links with absolute targets stay in the tree",
			tree: []string{
				"opt/kernels/bzImage", "opt/kernels/initramfs.cpio",
				"boot/vmlinuz -> /opt/kernels/bzImage", "boot/initrd.img -> /opt/kernels/initramfs.cpio",
			},
			kernel: "/boot/vmlinuz -> /opt/kernels/bzImage", initrd: "/boot/initrd.img -> /opt/kernels/initramfs.cpio",
		},
		{
			name: "top-level links through a linked directory",
			tree: []string{
				"srv/k/vmlinuz-6.1", "srv/k/initrd-6.1", "kernels -> srv/k",
				"vmlinuz -> kernels/vmlinuz-6.1", "initrd.img -> /srv/../kernels/initrd-6.1",
			},
			kernel: "/vmlinuz -> /srv/k/vmlinuz-6.1", initrd: "/initrd.img -> /srv/k/initrd-6.1",
		},
		{
			name: "a dangling link is passed over",
			tree: []string{
				"boot/vmlinuz -> vmlinuz-6.0-removed", "vmlinuz -> opt/vmlinuz-5.10", "opt/vmlinuz-5.10",
			},
			kernel: "/vmlinuz -> /opt/vmlinuz-5.10",
		},
		{
			name: "Alpine lts before virt",
			tree: []string{
				"boot/vmlinuz-virt", "boot/initramfs-virt", "boot/vmlinuz-lts", "boot/initramfs-lts",
				"boot/config-lts", "boot/System.map-lts",
			},
			kernel: "/boot/vmlinuz-lts", initrd: "/boot/initramfs-lts",
		},
		{
			name: "Arch, not the fallback initramfs, not the module tree's copy",
			tree: []string{
				"boot/vmlinuz-linux", "boot/initramfs-linux-fallback.img", "boot/initramfs-linux.img",
				"usr/lib/modules/6.9.7-arch1-1/vmlinuz", "usr/lib/modules/6.9.7-arch1-1/pkgbase", "lib -> usr/lib",
			},
			kernel: "/boot/vmlinuz-linux", initrd: "/boot/initramfs-linux.img",
		},
		{
			name: "Arch kernel only in the module tree: initramfs by pkgbase",
			tree: []string{
				"usr/lib/modules/6.9.7-arch1-1/vmlinuz", "usr/lib/modules/6.9.7-arch1-1/pkgbase", "boot/initramfs-linux.img",
			},
			pes:    map[string][]byte{"usr/lib/modules/6.9.7-arch1-1/pkgbase": []byte("linux\n")},
			kernel: "/usr/lib/modules/6.9.7-arch1-1/vmlinuz", initrd: "/boot/initramfs-linux.img",
		},
		{
			name: "Fedora: newest module tree, initramfs in /boot",
			tree: []string{
				"lib -> usr/lib",
				"usr/lib/modules/6.5.5-200.fc38.x86_64/vmlinuz", "boot/initramfs-6.5.5-200.fc38.x86_64.img",
				"usr/lib/modules/6.5.6-300.fc39.x86_64/vmlinuz", "boot/initramfs-6.5.6-300.fc39.x86_64.img",
				"boot/loader/entries/x.conf",
			},
			kernel: "/usr/lib/modules/6.5.6-300.fc39.x86_64/vmlinuz", initrd: "/boot/initramfs-6.5.6-300.fc39.x86_64.img",
		},
		{
			name: "Fedora image mode: initramfs beside the kernel",
			tree: []string{
				"usr/lib/modules/6.8.5-301.fc40.x86_64/vmlinuz", "usr/lib/modules/6.8.5-301.fc40.x86_64/initramfs.img", "boot/",
			},
			kernel: "/usr/lib/modules/6.8.5-301.fc40.x86_64/vmlinuz", initrd: "/usr/lib/modules/6.8.5-301.fc40.x86_64/initramfs.img",
		},
		{
			name:   "non-merged /lib/modules",
			tree:   []string{"lib/modules/5.14.0-362.el9.x86_64/vmlinuz", "boot/initramfs-5.14.0-362.el9.x86_64.img"},
			kernel: "/lib/modules/5.14.0-362.el9.x86_64/vmlinuz", initrd: "/boot/initramfs-5.14.0-362.el9.x86_64.img",
		},
		{
			name:   "kernel without an initrd",
			tree:   []string{"boot/vmlinuz-6.1.0-28-amd64", "boot/initrd.img-6.1.0-9-amd64"},
			kernel: "/boot/vmlinuz-6.1.0-28-amd64",
		},
		{
			name: "unified kernel image: newest, sections, cmdline",
			tree: []string{
				"boot/EFI/Linux/fedora-6.5.5-200.fc38.x86_64.efi", "boot/EFI/Linux/fedora-6.5.6-300.fc39.x86_64.efi",
				"boot/EFI/Linux/fedora-6.5.6-300.fc39.x86_64.efi.extra.d/",
			},
			pes: map[string][]byte{
				"boot/EFI/Linux/fedora-6.5.5-200.fc38.x86_64.efi": ukiNoInitrd,
				"boot/EFI/Linux/fedora-6.5.6-300.fc39.x86_64.efi": uki,
			},
			kernel:  "/boot/EFI/Linux/fedora-6.5.6-300.fc39.x86_64.efi (.linux section)",
			initrd:  "/boot/EFI/Linux/fedora-6.5.6-300.fc39.x86_64.efi (.initrd section)",
			cmdline: "root=UUID=1234 rw quiet",
		},
		{
			name:   "unified kernel image in /efi without an initrd; a PE without .linux passed over",
			tree:   []string{"efi/EFI/Linux/a.efi", "efi/EFI/Linux/z-loader.efi"},
			pes:    map[string][]byte{"efi/EFI/Linux/a.efi": ukiNoInitrd, "efi/EFI/Linux/z-loader.efi": notUKI},
			kernel: "/efi/EFI/Linux/a.efi (.linux section)",
		},
		{
			name:   "a kernel file wins over a unified kernel image",
			tree:   []string{"boot/vmlinuz-6.1.0-28-amd64", "boot/EFI/Linux/x-6.2.efi"},
			pes:    map[string][]byte{"boot/EFI/Linux/x-6.2.efi": uki},
			kernel: "/boot/vmlinuz-6.1.0-28-amd64",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			makeTree(t, root, tc.tree, tc.pes)
			k, err := FindKernel(root)
			if err != nil {
				t.Fatal(err)
			}
			initrd := ""
			if k.Initrd != nil {
				initrd = k.Initrd.String()
			}
			if k.Kernel.String() != tc.kernel || initrd != tc.initrd || k.Cmdline != tc.cmdline {
				t.Fatalf("got kernel %q initrd %q cmdline %q\nwant kernel %q initrd %q cmdline %q",
					k.Kernel, initrd, k.Cmdline, tc.kernel, tc.initrd, tc.cmdline)
			}
			// The host paths must hold what the tree holds at the target.
			kf, inf, err := k.Files(root, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			want := strings.TrimPrefix(k.Kernel.Target, "/")
			if k.Kernel.Section != "" {
				want = "the kernel"
			}
			if got, _ := os.ReadFile(kf); string(got) != want {
				t.Errorf("kernel file %s holds %q, want %q", kf, got, want)
			}
			if k.Initrd != nil {
				want := strings.TrimPrefix(k.Initrd.Target, "/")
				if k.Initrd.Section != "" {
					want = "the initrd" // exactly: the raw section's padding is not part of it
				}
				if got, _ := os.ReadFile(inf); string(got) != want {
					t.Errorf("initrd file %s holds %q, want %q", inf, got, want)
				}
			} else if inf != "" {
				t.Errorf("no initrd found, yet Files gives %s", inf)
			}
		})
	}
}

func TestFindKernelRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		tree []string
		pes  map[string][]byte
		want error
		msg  string
	}{
		{"kernel link climbs out of the tree", []string{"boot/vmlinuz -> ../../../../../../../../etc/os-release"}, nil, ErrTreeEscape, "/boot/vmlinuz -> ../../"},
		{"initrd link climbs out of the tree", []string{"boot/vmlinuz-6.1", "boot/initrd.img-6.1 -> ../../outside/initrd"}, nil, ErrTreeEscape, "/boot/initrd.img-6.1 -> ../../outside"},
		{"linked directory climbs out", []string{"boot -> ../host-boot"}, nil, ErrTreeEscape, "/boot -> ../host-boot"},
		// The host has /etc/os-release; the tree does not. An absolute
		// target means the tree's file, so there is no kernel.
		{"absolute link to a host file", []string{"vmlinuz -> /etc/os-release", "etc/"}, nil, ErrNoKernel, "/boot/vmlinuz-*"},
		{"empty tree", []string{"etc/hostname"}, nil, ErrNoKernel, "/usr/lib/modules/*/vmlinuz"},
		{"link loop", []string{"vmlinuz -> a", "a -> b", "b -> a"}, nil, nil, "more than 40 symlinks"},
		{"directory where a kernel goes", []string{"boot/vmlinuz/", "vmlinuz/"}, nil, ErrNoKernel, "looked at"},
		{"not a PE in EFI/Linux", []string{"boot/EFI/Linux/broken.efi"}, nil, nil, "/boot/EFI/Linux/broken.efi: not a PE image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			makeTree(t, root, tc.tree, tc.pes)
			k, err := FindKernel(root)
			if err == nil {
				t.Fatalf("found %+v, want an error", k)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if errors.Is(err, ErrNoKernel) && !strings.Contains(err.Error(), root) {
				t.Errorf("error %q does not name the tree", err)
			}
		})
	}
}

func TestCompareVersions(t *testing.T) {
	// Each is older than the next.
	order := []string{"5.10", "6.1~rc1", "6.1", "6.1.0-9", "6.1.0-9-amd64", "6.1.0-28", "6.1.0-28+b1", "6.1.0-28-amd64", "6.1.0-28-cloud-amd64", "6.2", "6.10.1"}
	for i, a := range order {
		for j, b := range order {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := CompareVersions(a, b); got != want {
				t.Errorf("CompareVersions(%q, %q) = %d, want %d", a, b, got, want)
			}
		}
	}
	if CompareVersions("6.01", "6.1") != 0 {
		t.Errorf("leading zeros should not count")
	}
}

func TestImageCmdline(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "ro",
		"root=UUID=1234 rw quiet": "ro quiet",
		"rootflags=subvol=root rootfstype=btrfs console=ttyS0 ro": "ro console=ttyS0",
		"rd.luks=0 root=/dev/sda2":                                "ro rd.luks=0",
	} {
		if got := ImageCmdline(in); got != want {
			t.Errorf("ImageCmdline(%q) = %q, want %q", in, got, want)
		}
	}
}
