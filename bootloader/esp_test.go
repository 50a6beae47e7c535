package bootloader

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/layout"
)

// installedESP is a mounted-style ESP with imprint's menu on it
// (entries local, diskless, netboot; default local).
func installedESP(t *testing.T) (*ESP, DirFS) {
	t.Helper()
	f := DirFS(t.TempDir())
	if _, err := Install(context.Background(), f, testInstall(t, f)); err != nil {
		t.Fatal(err)
	}
	return NewESP(f), f
}

// snapshot is every file under an ESP directory with its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAddEntryCopiesHostFilesAndKeepsESPPaths(t *testing.T) {
	esp, f := installedESP(t)
	kernel := filepath.Join(t.TempDir(), "vmlinuz-alt")
	os.WriteFile(kernel, []byte("alt kernel"), 0o644)
	m, err := esp.AddEntry(Entry{
		ID: "alt", Title: "Alternative", Linux: kernel,
		Initrd: []string{"/EFI/imprint/v1/initrd.img"}, Options: "ro quiet",
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	if m.Default != "alt" {
		t.Errorf("default %q, want alt", m.Default)
	}
	if got := string(must(f.ReadFile("/EFI/imprint/entries/alt/vmlinuz-alt"))); got != "alt kernel" {
		t.Errorf("copied kernel = %q", got)
	}
	conf := ParseEntryFile(string(must(f.ReadFile("/loader/entries/imprint-alt.conf"))))
	if conf["linux"][0] != "/EFI/imprint/entries/alt/vmlinuz-alt" || conf["initrd"][0] != "/EFI/imprint/v1/initrd.img" {
		t.Errorf("entry file: %v", conf)
	}
	if !strings.Contains(string(must(f.ReadFile(LoaderConf))), "default imprint-alt*") {
		t.Error("loader.conf does not make alt the default")
	}
	back, err := esp.Menu()
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := back.Find("alt"); !ok || e.Linux != "/EFI/imprint/entries/alt/vmlinuz-alt" {
		t.Errorf("menu.json: %+v", e)
	}
}

func TestAddEntryRefusesBeforeWritingAnything(t *testing.T) {
	host := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(host, []byte("k"), 0o644)
	for _, tc := range []struct {
		name      string
		entry     Entry
		want      error
		wantField string
	}{
		{"existing id", Entry{ID: "local", Title: "x", Linux: host}, ErrEntryExists, ""},
		{"missing initrd after a good kernel", Entry{ID: "alt", Title: "x", Linux: host, Initrd: []string{"/nowhere/initrd"}}, ErrNoFile, "initrd"},
		{"missing kernel", Entry{ID: "alt", Title: "x", Linux: "/nowhere/vmlinuz"}, ErrNoFile, "kernel"},
		{"missing EFI binary", Entry{ID: "alt", Title: "x", EFI: "/nowhere/x.efi"}, ErrNoFile, "efi"},
		{"bad id", Entry{ID: "Bad ID", Title: "x", Linux: host}, nil, ""},
		{"kernel and EFI binary", Entry{ID: "alt", Title: "x", Linux: host, EFI: host}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			esp, f := installedESP(t)
			before := snapshot(t, string(f))
			_, err := esp.AddEntry(tc.entry, true)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			var fe *FileError
			if tc.wantField != "" && (!errors.As(err, &fe) || fe.Field != tc.wantField) {
				t.Errorf("error %v does not name the %s", err, tc.wantField)
			}
			after := snapshot(t, string(f))
			if len(after) != len(before) {
				t.Errorf("%d files before, %d after a refused add", len(before), len(after))
			}
			for p, b := range before {
				if after[p] != b {
					t.Errorf("%s changed by a refused add", p)
				}
			}
		})
	}
}

func TestRemoveEntryAndSetDefault(t *testing.T) {
	esp, f := installedESP(t)
	if _, err := esp.RemoveEntry("local"); !errors.Is(err, ErrIsDefault) {
		t.Fatalf("removing the default: %v, want ErrIsDefault", err)
	}
	_, err := esp.SetDefault("nope", nil)
	if !errors.Is(err, ErrNoEntry) || !strings.Contains(err.Error(), "local, diskless, netboot") {
		t.Fatalf("unknown default: %v, want ErrNoEntry listing the entries", err)
	}
	timeout := 0
	m, err := esp.SetDefault("diskless", &timeout)
	if err != nil {
		t.Fatal(err)
	}
	if m.Default != "diskless" || m.Timeout != 0 {
		t.Fatalf("default %q timeout %d", m.Default, m.Timeout)
	}
	if m, err = esp.SetDefault("diskless", nil); err != nil || m.Timeout != 0 {
		t.Fatalf("no timeout given changed it to %d (%v)", m.Timeout, err)
	}
	if _, err := esp.RemoveEntry("local"); err != nil {
		t.Fatal(err)
	}
	if f.Exists("/loader/entries/imprint-local.conf") {
		t.Error("the removed entry's file is still there")
	}
	if _, err := esp.RemoveEntry("local"); !errors.Is(err, ErrNoEntry) {
		t.Errorf("removing it twice: %v, want ErrNoEntry", err)
	}
	if _, err := NewESP(DirFS(t.TempDir())).SetDefault("local", nil); !errors.Is(err, ErrNoMenu) {
		t.Errorf("an ESP without imprint's menu: %v, want ErrNoMenu", err)
	}
}

// espDisk makes an image file with GPT [other 8 MiB, esp 48 MiB], the ESP
// formatted, and returns its path and the ESP.
func espDisk(t *testing.T, withESP bool) (string, layout.Placed) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	d, err := disk.OpenDisk(p, disk.OpenOptions{Write: true, Create: true, Size: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	espType := layout.TypeESP
	if !withESP {
		espType = layout.TypeLinuxGeneric
	}
	tab, err := layout.Place(layout.Layout{Partitions: []layout.Spec{
		{Name: "other", Type: layout.TypeLinuxGeneric, Role: layout.RoleLocal, Size: 8 << 20},
		{Name: "esp", Type: espType, Role: layout.RoleESP, Size: 48 << 20},
	}}, d.Size(), d.SectorSize())
	if err != nil {
		t.Fatal(err)
	}
	if err := disk.WriteGPT(d, tab); err != nil {
		t.Fatal(err)
	}
	esp, _ := tab.Find("esp")
	if _, err := disk.FormatFAT(d, esp, "ESP"); err != nil {
		t.Fatal(err)
	}
	return p, esp
}

func TestOpenDiskESPFindsTheESPAndFlushesOnClose(t *testing.T) {
	p, placed := espDisk(t, true)
	esp, err := OpenDiskESP(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := esp.FS.WriteFile("/EFI/imprint/hello", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := esp.Close(); err != nil {
		t.Fatal(err)
	}
	esp, err = OpenDiskESP(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer esp.Close()
	if got := string(must(esp.FS.ReadFile("/EFI/imprint/hello"))); got != "hi" {
		t.Fatalf("read back %q", got)
	}

	where, err := LoaderOnDisk(p, Grub)
	if err != nil {
		t.Fatal(err)
	}
	if where.PartNum != 2 || where.Start != uint64(placed.Start/512) || where.Len != uint64(placed.Len/512) ||
		!strings.EqualFold(where.PartGUID, placed.GUID) || where.File != `\EFI\imprint\grubx64.efi` {
		t.Errorf("LoaderOnDisk = %+v, ESP placed at %+v", where, placed)
	}
	if _, err := LoaderOnDisk(p, "lilo"); !errors.Is(err, ErrUnknownLoader) || !strings.Contains(err.Error(), "lilo") {
		t.Errorf("unknown loader: %v", err)
	}
}

func TestOpenESPRefusals(t *testing.T) {
	noESP, _ := espDisk(t, false)
	for _, write := range []bool{false, true} {
		if _, err := OpenDiskESP(noESP, write); !errors.Is(err, ErrNoESP) || !strings.Contains(err.Error(), noESP) {
			t.Errorf("disk without an ESP (write %v): %v, want ErrNoESP naming it", write, err)
		}
	}
	if _, err := LoaderOnDisk(noESP, SystemdBoot); !errors.Is(err, ErrNoESP) {
		t.Errorf("LoaderOnDisk without an ESP: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := OpenDirESP(file); !errors.Is(err, ErrNotDir) {
		t.Errorf("OpenDirESP(file): %v, want ErrNotDir", err)
	}
	if _, err := OpenDirESP(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenDirESP(missing): %v", err)
	}
}

func TestParseBootNum(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint16
		ok   bool
	}{
		{"0003", 3, true}, {"Boot000A", 10, true}, {"boot00ff", 255, true}, {"FFFF", 0xffff, true},
		{"10000", 0, false}, {"xyz", 0, false}, {"", 0, false}, {"-1", 0, false},
	} {
		got, err := ParseBootNum(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBootNum(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
