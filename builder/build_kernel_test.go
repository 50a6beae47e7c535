package builder

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/store"
)

func needMkfs(t *testing.T) {
	t.Helper()
	testenv.NeedTool(t, "mkfs.ext4")
}

func TestBuildRootfsWithoutKernelFails(t *testing.T) {
	root := t.TempDir()
	makeTree(t, root, []string{"etc/hostname", "boot/grub/"}, nil)
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = Build(t.Context(), Options{Store: st, Name: "x", Rootfs: root})
	if !errors.Is(err, ErrNoKernel) || !errors.Is(err, ErrInput) {
		t.Fatalf("got %v, want ErrNoKernel and ErrInput", err)
	}
	for _, want := range []string{root, "/boot/vmlinuz-*", "/boot/EFI/Linux/*.efi", "--no-kernel"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(st.Root, "images")); len(ents) != 0 {
		t.Errorf("the failed build left images: %v", ents)
	}
	_, err = Build(t.Context(), Options{Store: st, Name: "x", Rootfs: root, NoKernel: true, Kernel: filepath.Join(root, "etc/hostname")})
	if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "--no-kernel does not combine") {
		t.Errorf("--no-kernel with --kernel: got %v", err)
	}
}

func TestBuildBootArtifacts(t *testing.T) {
	needMkfs(t)
	uki := makeUKI(t,
		peSection{".cmdline", []byte("root=UUID=1234 rw console=ttyS0\n\x00")},
		peSection{".initrd", []byte("uki initrd")},
		peSection{".linux", []byte("uki kernel")},
	)
	given := filepath.Join(t.TempDir(), "given-kernel")
	os.WriteFile(given, []byte("given kernel"), 0o644)
	for _, tc := range []struct {
		name                    string
		tree                    []string
		o                       Options
		kernel, initrd, cmdline string // contents; "" none
		report                  BootReport
	}{
		{
			name: "--no-kernel builds an image without boot files",
			tree: []string{"etc/hostname"}, o: Options{NoKernel: true},
		},
		{
			name:   "plain /boot/vmlinuz links",
			tree:   []string{"boot/k/a", "boot/k/b", "boot/vmlinuz -> k/a", "boot/initrd.img -> /boot/k/b"},
			kernel: "boot/k/a", initrd: "boot/k/b", cmdline: "ro",
			report: BootReport{Kernel: "/boot/vmlinuz -> /boot/k/a", Initrd: "/boot/initrd.img -> /boot/k/b", Cmdline: "ro", CmdlineFrom: "default"},
		},
		{
			name:   "unified kernel image: sections and its command line",
			tree:   []string{"boot/EFI/Linux/linux-6.1.efi"},
			kernel: "uki kernel", initrd: "uki initrd", cmdline: "ro console=ttyS0",
			report: BootReport{
				Kernel: "/boot/EFI/Linux/linux-6.1.efi (.linux section)", Initrd: "/boot/EFI/Linux/linux-6.1.efi (.initrd section)",
				Cmdline: "ro console=ttyS0", CmdlineFrom: "/boot/EFI/Linux/linux-6.1.efi .cmdline",
			},
		},
		{
			name:   "--kernel and --cmdline win over the tree",
			tree:   []string{"boot/vmlinuz-6.1", "boot/initrd.img-6.1"},
			o:      Options{Kernel: given, Cmdline: "console=ttyS0"},
			kernel: "given kernel", cmdline: "console=ttyS0",
			report: BootReport{Kernel: given, Cmdline: "console=ttyS0", CmdlineFrom: "--cmdline"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			makeTree(t, root, tc.tree, map[string][]byte{"boot/EFI/Linux/linux-6.1.efi": uki})
			st, err := store.CreateDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			o := tc.o
			o.Store, o.Name, o.Rootfs, o.TmpDir = st, "x", root, t.TempDir()
			res, err := Build(t.Context(), o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Boot != tc.report {
				t.Errorf("report %+v, want %+v", res.Boot, tc.report)
			}
			b := res.Manifest.Boot
			if tc.kernel == "" {
				if b != nil {
					t.Fatalf("boot files %+v, want none", b)
				}
				return
			}
			if b == nil || b.Kernel == nil || b.Kernel.SHA256 != image.HashBytes([]byte(tc.kernel)) {
				t.Errorf("kernel %+v, want the content %q", b, tc.kernel)
			}
			switch {
			case tc.initrd == "" && b.Initrd != nil:
				t.Errorf("initrd %+v, want none", b.Initrd)
			case tc.initrd != "" && (b.Initrd == nil || b.Initrd.SHA256 != image.HashBytes([]byte(tc.initrd))):
				t.Errorf("initrd %+v, want the content %q", b.Initrd, tc.initrd)
			}
			if b.Cmdline != tc.cmdline {
				t.Errorf("cmdline %q, want %q", b.Cmdline, tc.cmdline)
			}
		})
	}
}
