package bootloader

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
)

func testInstall(t *testing.T, f FS) InstallOptions {
	t.Helper()
	return InstallOptions{
		Loaders: map[string][]byte{image.LoaderSystemdBoot: []byte("MZ systemd-boot"), image.LoaderIPXEEFI: []byte("MZ ipxe")},
		Name:    "node", Version: "v1", Kernel: []byte("kernel"), Initrd: []byte("initrd"),
		Cmdline: "ro console=ttyS0", RootPARTUUID: "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE",
		DisklessURL: "http://10.0.0.1:8080", NetbootURL: "http://10.0.0.1:8080", NewESP: true, Timeout: 3,
	}
}

func TestInstallWritesEntriesForSystemdBootAndGrub(t *testing.T) {
	f := DirFS(t.TempDir())
	// Another OS already on the ESP.
	f.WriteFile("/EFI/Microsoft/Boot/bootmgfw.efi", []byte("MZ windows"))
	f.WriteFile("/EFI/debian/shimx64.efi", []byte("MZ shim"))
	f.WriteFile("/EFI/debian/grubx64.efi", []byte("MZ grub"))
	m, err := Install(context.Background(), f, testInstall(t, f))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range m.Entries {
		ids = append(ids, e.ID)
	}
	if got := strings.Join(ids, " "); got != "local diskless netboot chainload-debian chainload-microsoft" {
		t.Fatalf("entries: %s", got)
	}
	local := ParseEntryFile(string(must(f.ReadFile("/loader/entries/imprint-local.conf"))))
	if local["linux"][0] != "/EFI/imprint/v1/vmlinuz" || local["initrd"][0] != "/EFI/imprint/v1/initrd.img" ||
		local["options"][0] != "root=PARTUUID=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee ro console=ttyS0 imprint.entry=local" {
		t.Fatalf("local entry: %v", local)
	}
	diskless := ParseEntryFile(string(must(f.ReadFile("/loader/entries/imprint-diskless.conf"))))
	if opts := diskless["options"][0]; !strings.Contains(opts, "imprint.source=http://10.0.0.1:8080") || strings.Contains(opts, "root=") {
		t.Fatalf("diskless options %q", opts)
	}
	win := ParseEntryFile(string(must(f.ReadFile("/loader/entries/imprint-chainload-microsoft.conf"))))
	if win["efi"][0] != "/EFI/Microsoft/Boot/bootmgfw.efi" {
		t.Fatalf("windows entry %v", win)
	}
	deb := ParseEntryFile(string(must(f.ReadFile("/loader/entries/imprint-chainload-debian.conf"))))
	if deb["efi"][0] != "/EFI/debian/shimx64.efi" {
		t.Fatalf("debian entry should prefer shim: %v", deb)
	}
	conf := string(must(f.ReadFile(LoaderConf)))
	if !strings.Contains(conf, "default imprint-local*") || !strings.Contains(conf, "timeout 3") {
		t.Fatalf("loader.conf:\n%s", conf)
	}
	grub := string(must(f.ReadFile(GrubCfg)))
	for _, want := range []string{`set default="local"`, "linux /EFI/imprint/v1/vmlinuz root=PARTUUID=aaaaaaaa", `--id "diskless"`, "chainloader /EFI/Microsoft/Boot/bootmgfw.efi"} {
		if !strings.Contains(grub, want) {
			t.Errorf("grub.cfg lacks %q:\n%s", want, grub)
		}
	}
	if string(must(f.ReadFile("/EFI/BOOT/BOOTX64.EFI"))) != "MZ systemd-boot" || string(must(f.ReadFile("/EFI/systemd/systemd-bootx64.efi"))) != "MZ systemd-boot" {
		t.Fatal("systemd-boot was not installed")
	}
	if !strings.Contains(string(must(f.ReadFile("/EFI/imprint/autoexec.ipxe"))), "chain http://10.0.0.1:8080/boot.ipxe") {
		t.Fatal("iPXE script does not chain to the server")
	}
}

func TestInstallNeverReplacesAnotherOSsFallbackLoader(t *testing.T) {
	f := DirFS(t.TempDir())
	f.WriteFile("/EFI/Boot/bootx64.efi", []byte("MZ theirs"))
	o := testInstall(t, f)
	o.NewESP = false
	if _, err := Install(context.Background(), f, o); err != nil {
		t.Fatal(err)
	}
	if got := string(must(f.ReadFile("/EFI/Boot/bootx64.efi"))); got != "MZ theirs" {
		t.Fatalf("the existing fallback loader was replaced by %q", got)
	}
	if f.Exists("/EFI/BOOT/BOOTX64.EFI") && string(must(f.ReadFile("/EFI/BOOT/BOOTX64.EFI"))) != "MZ theirs" {
		t.Fatal("a second fallback loader was written beside the existing one")
	}
}

func TestMenuEditsAndBootCounting(t *testing.T) {
	f := DirFS(t.TempDir())
	if _, err := Install(context.Background(), f, testInstall(t, f)); err != nil {
		t.Fatal(err)
	}
	m, err := ReadMenu(f)
	if err != nil {
		t.Fatal(err)
	}
	local, _ := m.Find("local")
	if err := m.SetSlotEntry("b", *local, 3); err != nil {
		t.Fatal(err)
	}
	m.Default = "diskless"
	if err := WriteMenu(f, m); err != nil {
		t.Fatal(err)
	}
	if !f.Exists("/loader/entries/imprint-slot-b+3.conf") {
		t.Fatal("boot counting file name not used")
	}
	// systemd-boot counts a try by renaming the file.
	os.Rename(f.path("/loader/entries/imprint-slot-b+3.conf"), f.path("/loader/entries/imprint-slot-b+2-1.conf"))
	m, _ = ReadMenu(f)
	if e, _ := m.Find("slot-b"); e.Tries == nil || e.Tries.Left != 2 || e.Tries.Done != 1 {
		t.Fatalf("tries read back as %+v", e.Tries)
	}
	if !strings.Contains(string(must(f.ReadFile(LoaderConf))), "default imprint-diskless*") {
		t.Fatal("default not changed")
	}
	m.Default = "nope"
	if err := WriteMenu(f, m); !errors.Is(err, ErrNoEntry) {
		t.Fatalf("unknown default: %v", err)
	}
	for _, bad := range []Entry{{ID: "Bad ID", Linux: "/k"}, {ID: "x"}, {ID: "y", Linux: "/k", EFI: "/e"}, {ID: "z", Linux: "/k", Title: "a\nb"},
		{ID: "slot-x", Linux: "/k"}, {ID: "slot-a", Slot: "b", Linux: "/k"}, {ID: "counted", Linux: "/k", Tries: &Tries{Left: 1}}} {
		m2 := &Menu{Entries: []Entry{bad}}
		if err := m2.Validate(); err == nil {
			t.Errorf("entry %+v was accepted", bad)
		}
	}
}

// failingFS stops writing after a number of operations, as a crash would.
type failingFS struct {
	FS
	left int
}

var errCrash = errors.New("crash")

func (c *failingFS) step() error {
	if c.left == 0 {
		return errCrash
	}
	c.left--
	return nil
}
func (c *failingFS) WriteFile(n string, b []byte) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.WriteFile(n, b)
}
func (c *failingFS) Remove(n string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.Remove(n)
}

// bootable checks what systemd-boot and GRUB would do with the ESP: the
// default pattern matches an entry file whose kernel and initrds exist.
func bootable(t *testing.T, f FS) {
	t.Helper()
	conf := ParseEntryFile(string(must(f.ReadFile(LoaderConf))))
	pattern := conf["default"][0]
	ents, _ := f.ReadDir(EntriesDir)
	found := false
	for _, de := range ents {
		if ok, _ := path.Match(pattern, de.Name()); !ok {
			continue
		}
		found = true
		e := ParseEntryFile(string(must(f.ReadFile(path.Join(EntriesDir, de.Name())))))
		for _, k := range append(e["linux"], append(e["initrd"], e["efi"]...)...) {
			if !f.Exists(k) {
				t.Fatalf("default entry %s needs %s, which is missing", de.Name(), k)
			}
		}
	}
	if !found {
		t.Fatalf("loader.conf default %q matches no entry file", pattern)
	}
}

func TestMenuSurvivesACrashAtEveryStep(t *testing.T) {
	base := DirFS(t.TempDir())
	o := testInstall(t, base)
	if _, err := Install(context.Background(), base, o); err != nil {
		t.Fatal(err)
	}
	for n := 0; ; n++ {
		dir := t.TempDir()
		copyTree(t, string(base), dir)
		f := &failingFS{FS: DirFS(dir), left: n}
		o2 := o
		o2.Version, o2.Kernel = "v2", []byte("kernel 2")
		_, err := Install(context.Background(), f, o2)
		bootable(t, DirFS(dir))
		if err == nil {
			if n < 3 {
				t.Fatalf("install finished after %d writes", n)
			}
			break
		}
		if !errors.Is(err, errCrash) {
			t.Fatal(err)
		}
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, _ := os.ReadFile(p)
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
