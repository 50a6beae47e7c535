package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/bootloader"
)

// TestBootErrorsNameTheFlag checks the one thing cli adds to bootloader's
// menu API: a wrong value is reported under the flag that gave it.
func TestBootErrorsNameTheFlag(t *testing.T) {
	esp := t.TempDir()
	m := &bootloader.Menu{Loader: bootloader.SystemdBoot, Firmware: bootloader.UEFI, Default: "local", Entries: []bootloader.Entry{
		{ID: "local", Title: "Local", Linux: "/EFI/imprint/v1/vmlinuz"},
	}}
	if err := bootloader.WriteMenu(bootloader.DirFS(esp), m); err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(kernel, []byte("k"), 0o644)
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o644)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"boot", "add", "--esp", esp, "--id", "alt", "--title", "Alt", "--kernel", kernel, "--initrd", "/nowhere/initrd.img"},
			"--initrd /nowhere/initrd.img: neither a file here nor on the ESP"},
		{[]string{"boot", "add", "--esp", esp, "--id", "alt", "--title", "Alt", "--efi", "/nowhere/x.efi"}, "--efi /nowhere/x.efi"},
		{[]string{"boot", "add", "--esp", esp, "--id", "local", "--title", "Again", "--kernel", kernel}, `entry "local": boot entry exists`},
		{[]string{"boot", "list", "--esp", notDir}, "--esp: " + notDir + ": not a directory"},
		{[]string{"boot", "list", "--esp", esp, "--disk", kernel}, "give one of --disk PATH or --esp DIR"},
		{[]string{"boot", "list", "--disk", kernel}, "--disk: "},
		{[]string{"boot", "default", "nope", "--esp", esp}, `entry "nope": no such boot entry; the menu has local`},
		{[]string{"boot", "remove", "local", "--esp", esp}, "make another entry the default first"},
		{[]string{"boot", "nvram", "add", "--disk", kernel, "--loader", "lilo"}, `--loader "lilo": unknown boot loader`},
		{[]string{"boot", "nvram", "next", "zz"}, `"zz" is not a boot entry number`},
	} {
		code, out, errs := run(t, tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("imprint %s: exit %d, stderr lacks %q:\n%s%s", strings.Join(tc.args, " "), code, tc.want, out, errs)
		}
	}
	// Nothing above changed the menu.
	after, err := bootloader.ReadMenu(bootloader.DirFS(esp))
	if err != nil || len(after.Entries) != 1 || after.Default != "local" {
		t.Fatalf("menu after refused edits: %+v %v", after, err)
	}
	mustRun(t, "boot", "add", "--esp", esp, "--id", "alt", "--title", "Alt", "--kernel", kernel, "--default")
	if out := mustRun(t, "boot", "list", "--esp", esp); !strings.Contains(out, "* alt") {
		t.Errorf("boot list after add --default:\n%s", out)
	}
}

// On a disk with root slots `boot default local` gives the boot back to
// the slots (there is no entry "local" there), and says which boots next
// (of equal versions, systemd-boot takes the later name).
func TestBootDefaultLocalOnASlottedDisk(t *testing.T) {
	esp := t.TempDir()
	m := &bootloader.Menu{Loader: bootloader.SystemdBoot, Firmware: bootloader.UEFI, Entries: []bootloader.Entry{
		{ID: "diskless", Type: bootloader.TypeDiskless, Title: "Diskless", Linux: "/k"},
	}}
	for _, slot := range []string{"a", "b"} {
		if err := m.SetSlotEntry(slot, bootloader.Entry{Title: "node", Linux: "/k", Version: "v1"}, 0); err != nil {
			t.Fatal(err)
		}
	}
	m.Default = "diskless"
	if err := bootloader.WriteMenu(bootloader.DirFS(esp), m); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, "boot", "default", "local", "--esp", esp)
	if !strings.Contains(out, "the root slots; slot-b boots next") {
		t.Errorf("boot default local: %s", out)
	}
	after, err := bootloader.ReadMenu(bootloader.DirFS(esp))
	if err != nil || after.Default != "slot-b" {
		t.Fatalf("menu after boot default local: default %q, %v", after.Default, err)
	}
	conf, err := os.ReadFile(filepath.Join(esp, bootloader.LoaderConf))
	if err != nil || !strings.Contains(string(conf), "default "+bootloader.SlotPattern+"\n") {
		t.Errorf("loader.conf: %v\n%s", err, conf)
	}
}
