package bootloader

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/testenv"
)

// fakeHost is a host root with only systemd-boot and iPXE for UEFI
// installed: no GRUB modules, no undionly.kpxe or ipxe.lkrn.
func fakeHost(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for p, b := range map[string]string{
		"usr/lib/systemd/boot/efi/systemd-bootx64.efi": "MZ host systemd-boot",
		"usr/lib/ipxe/ipxe.efi":                        "MZ host ipxe",
	} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(root, p), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCollectLoadersNotesWhatTheHostLacks(t *testing.T) {
	got, notes, err := CollectLoaders(context.Background(), CollectOptions{Root: fakeHost(t), TmpDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if string(got[image.LoaderSystemdBoot]) != "MZ host systemd-boot" || string(got[image.LoaderIPXEEFI]) != "MZ host ipxe" {
		t.Errorf("host loaders not collected: %v", keys(got))
	}
	lacking := []string{image.LoaderGrubEFI, image.LoaderGrubBIOSBoot, image.LoaderGrubBIOSCore, image.LoaderIPXEBIOS, LoaderIPXELkrn}
	for _, n := range lacking {
		if _, ok := got[n]; ok {
			t.Errorf("%s collected from a host that lacks it", n)
		}
		found := false
		for _, note := range notes {
			found = found || strings.HasPrefix(note, "no "+n+" on this host") && strings.Contains(note, "--loader "+n+"=FILE")
		}
		if !found {
			t.Errorf("no note for %s in %q", n, notes)
		}
	}
	if len(notes) != len(lacking) {
		t.Errorf("%d notes, want %d: %q", len(notes), len(lacking), notes)
	}
}

func TestCollectLoadersGivenFilesWin(t *testing.T) {
	dir := t.TempDir()
	mine := filepath.Join(dir, "mine.efi")
	os.WriteFile(mine, []byte("MZ my systemd-boot"), 0o644)
	got, _, err := CollectLoaders(context.Background(), CollectOptions{Root: fakeHost(t), TmpDir: dir,
		Files: map[string]string{image.LoaderSystemdBoot: mine}})
	if err != nil {
		t.Fatal(err)
	}
	if string(got[image.LoaderSystemdBoot]) != "MZ my systemd-boot" {
		t.Errorf("systemd-boot = %q, want the given file", got[image.LoaderSystemdBoot])
	}
}

func TestCollectLoadersRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("hello"), 0o644)
	for _, c := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"unknown name", map[string]string{"bootx64.efi": text}, "unknown loader name"},
		{"not PE", map[string]string{image.LoaderIPXEEFI: text}, "does not start with MZ"},
		{"not boot.img", map[string]string{image.LoaderGrubBIOSBoot: text}, "not GRUB 2's i386-pc boot sector"},
		{"missing file", map[string]string{image.LoaderGrubEFI: filepath.Join(dir, "nope")}, "--loader grubx64.efi="},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := CollectLoaders(context.Background(), CollectOptions{Root: fakeHost(t), TmpDir: dir, Files: c.files})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error saying %q", err, c.want)
			}
		})
	}
}

// TestHostGrubImagesAreGeneric builds the GRUB images twice on this host:
// they must be the same bytes (builds are reproducible, and nothing
// per-disk is baked in) and find the ESP by imprint's grub.cfg.
func TestHostGrubImagesAreGeneric(t *testing.T) {
	biosTestGrub(t)
	if _, err := os.Stat("/usr/lib/grub/x86_64-efi/kernel.img"); err != nil {
		testenv.Skipf(t, "GRUB x86_64-efi is not installed (grub-efi-amd64-bin): %v", err)
	}
	ctx := context.Background()
	a, _, err := CollectLoaders(ctx, CollectOptions{TmpDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := CollectLoaders(ctx, CollectOptions{TmpDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{image.LoaderGrubEFI, image.LoaderGrubBIOSBoot, image.LoaderGrubBIOSCore} {
		if a[n] == nil || !bytes.Equal(a[n], b[n]) {
			t.Errorf("%s: %d and %d bytes, want two equal builds", n, len(a[n]), len(b[n]))
		}
	}
	if !bytes.Contains(a[image.LoaderGrubEFI], []byte("search --no-floppy --file --set=root "+GrubCfg)) {
		t.Errorf("grubx64.efi's early config does not search for %s", GrubCfg)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
