package bootloader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/imprint-dev/imprint/internal/testenv"
)

// twoSlots is a menu as a sync leaves it: slot a good with v1, slot b new
// with v2 and tries.
func twoSlots(t *testing.T, tries int) (DirFS, *Menu) {
	t.Helper()
	f := DirFS(t.TempDir())
	m := &Menu{Loader: SystemdBoot, Firmware: Both, Entries: []Entry{
		{ID: "diskless", Type: TypeDiskless, Title: "diskless", Linux: "/k", Options: "imprint.source=http://x"},
	}}
	base := Entry{Title: "node", Linux: "/EFI/imprint/v1/vmlinuz", Initrd: []string{"/EFI/imprint/v1/initrd.img"}, Options: "root=PARTUUID=aa ro", Version: "v1"}
	if err := m.SetSlotEntry("a", base, 0); err != nil {
		t.Fatal(err)
	}
	base.Version, base.Options, base.Linux = "v2", "root=PARTUUID=bb ro", "/EFI/imprint/v2/vmlinuz"
	if err := m.SetSlotEntry("b", base, tries); err != nil {
		t.Fatal(err)
	}
	if err := WriteMenu(f, m); err != nil {
		t.Fatal(err)
	}
	return f, m
}

func entryNames(t *testing.T, f DirFS) string {
	t.Helper()
	ents, err := f.ReadDir(EntriesDir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return strings.Join(n, " ")
}

func TestSlotEntriesAreCountedAndTheDefaultIsAPattern(t *testing.T) {
	f, _ := twoSlots(t, 3)
	if got := entryNames(t, f); got != "imprint-diskless.conf imprint-slot-a.conf imprint-slot-b+3.conf" {
		t.Fatalf("entry files: %s", got)
	}
	conf := string(must(f.ReadFile(LoaderConf)))
	if !strings.Contains(conf, "\ndefault imprint-slot-*\n") {
		t.Fatalf("loader.conf does not default to both slots:\n%s", conf)
	}
	b := ParseEntryFile(string(must(f.ReadFile(EntriesDir + "/imprint-slot-b+3.conf"))))
	if b["sort-key"][0] != SortKey || b["version"][0] != "v2" || b["options"][0] != "root=PARTUUID=bb ro imprint.entry=slot-b" {
		t.Fatalf("slot b entry: %v", b)
	}
	d := ParseEntryFile(string(must(f.ReadFile(EntriesDir + "/imprint-diskless.conf"))))
	if _, ok := d["sort-key"]; ok {
		t.Fatal("a non-slot entry got the slots' sort-key")
	}
	if !strings.HasSuffix(d["options"][0], " imprint.entry=diskless") {
		t.Fatalf("diskless options %q", d["options"][0])
	}
}

func order(m *Menu) string {
	var ids []string
	for _, e := range m.SlotOrder() {
		ids = append(ids, e.ID)
	}
	return strings.Join(ids, " ")
}

func next(m *Menu) string {
	for _, s := range m.Slots() {
		if s.Next {
			return s.ID
		}
	}
	return ""
}

// The life of an update under systemd-boot's rules: the new slot boots
// first while it has tries, falls behind when they run out, and bless,
// mark-bad and rollback move the choice by marking entries.
func TestSlotOrderFollowsTriesAndVersions(t *testing.T) {
	f, _ := twoSlots(t, 2)
	rename := func(from, to string) {
		t.Helper()
		if err := os.Rename(f.path(EntriesDir+"/"+from), f.path(EntriesDir+"/"+to)); err != nil {
			t.Fatal(err)
		}
	}
	read := func() *Menu {
		t.Helper()
		m, err := ReadMenu(f)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := read()
	if next(m) != "slot-b" || order(m) != "slot-b slot-a" {
		t.Fatalf("the new version does not boot first: %s", order(m))
	}
	// Two failed boots: systemd-boot renamed the file twice.
	rename("imprint-slot-b+2.conf", "imprint-slot-b+1-1.conf")
	if m = read(); next(m) != "slot-b" {
		t.Fatalf("with one try left: %s", order(m))
	}
	rename("imprint-slot-b+1-1.conf", "imprint-slot-b+0-2.conf")
	m = read()
	if next(m) != "slot-a" || order(m) != "slot-a slot-b" {
		t.Fatalf("a slot out of tries still boots first: %s", order(m))
	}
	st := m.Slots()
	if !st[0].Blessed || st[0].Bad || st[1].Blessed || !st[1].Bad || st[1].Tries.Done != 2 {
		t.Fatalf("slot states: %+v", st)
	}
	// Blessing b by hand makes it the newest good one again.
	if err := m.Bless("slot-b"); err != nil {
		t.Fatal(err)
	}
	if err := WriteMenu(f, m); err != nil {
		t.Fatal(err)
	}
	if got := entryNames(t, f); got != "imprint-diskless.conf imprint-slot-a.conf imprint-slot-b.conf" {
		t.Fatalf("after bless: %s", got)
	}
	m = read()
	if next(m) != "slot-b" {
		t.Fatalf("after bless: %s", order(m))
	}
	// Rollback: b is marked bad, a boots; again: back to b.
	if slot, err := m.Rollback(); err != nil || slot != "a" {
		t.Fatalf("rollback: %q %v", slot, err)
	}
	if err := WriteMenu(f, m); err != nil {
		t.Fatal(err)
	}
	if got := entryNames(t, f); got != "imprint-diskless.conf imprint-slot-a.conf imprint-slot-b+0.conf" {
		t.Fatalf("after rollback: %s", got)
	}
	if !strings.Contains(string(must(f.ReadFile(LoaderConf))), "default imprint-slot-*\n") {
		t.Fatal("rollback pinned an entry")
	}
	m = read()
	if next(m) != "slot-a" {
		t.Fatalf("after rollback: %s", order(m))
	}
	if slot, err := m.Rollback(); err != nil || slot != "b" || next(m) != "slot-b" {
		t.Fatalf("second rollback: %q %v %s", slot, err, order(m))
	}
	if err := m.MarkBad("diskless"); !errors.Is(err, ErrNotCounted) {
		t.Fatalf("mark bad on a non-slot entry: %v", err)
	}
	if err := m.Prefer("c"); !errors.Is(err, ErrNoSlotEntry) {
		t.Fatalf("prefer a missing slot: %v", err)
	}
	one := &Menu{}
	if err := one.SetSlotEntry("a", Entry{Linux: "/k"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := one.Rollback(); !errors.Is(err, ErrNoOtherSlot) {
		t.Fatalf("rollback with one slot: %v", err)
	}
	for _, bad := range []struct {
		slot  string
		tries int
	}{{"A", 1}, {"ab", 1}, {"", 1}, {"a", -1}, {"a", MaxTries + 1}} {
		if err := one.SetSlotEntry(bad.slot, Entry{Linux: "/k"}, bad.tries); err == nil {
			t.Errorf("slot %q with %d tries was accepted", bad.slot, bad.tries)
		}
	}
}

// Same versions in both slots: the file name decides (newest first by
// systemd's version compare of the names), as in systemd-boot.
func TestSameVersionSortsByName(t *testing.T) {
	m := &Menu{}
	m.SetSlotEntry("a", Entry{Linux: "/k", Version: "v1"}, 0)
	m.SetSlotEntry("b", Entry{Linux: "/k", Version: "v1"}, 0)
	if order(m) != "slot-b slot-a" {
		t.Fatalf("order %s", order(m))
	}
}

func TestGrubEnvBytes(t *testing.T) {
	b, err := EncodeGrubEnv(map[string]string{"imprint_tries_slot_b": "3", "imprint_good_slot_b": "0"})
	if err != nil {
		t.Fatal(err)
	}
	want := "# GRUB Environment Block\n# WARNING: Do not edit this file by tools other than grub-editenv!!!\nimprint_good_slot_b=0\nimprint_tries_slot_b=3\n"
	if len(b) != 1024 || string(b[:len(want)]) != want || strings.Trim(string(b[len(want):]), "#") != "" {
		t.Fatalf("grubenv bytes:\n%q", b)
	}
	env, err := ParseGrubEnv(b)
	if err != nil || env["imprint_tries_slot_b"] != "3" || len(env) != 2 {
		t.Fatalf("parsed back %v %v", env, err)
	}
	if _, err := ParseGrubEnv([]byte("hello")); !errors.Is(err, ErrGrubEnv) {
		t.Fatalf("a file that is no block: %v", err)
	}
	if _, err := EncodeGrubEnv(map[string]string{"x": strings.Repeat("y", 1024)}); err == nil {
		t.Fatal("an overfull block was accepted")
	}
	if _, err := EncodeGrubEnv(map[string]string{"a=b": "1"}); err == nil {
		t.Fatal("a name with '=' was accepted")
	}
	// GRUB's own tool writes the same bytes.
	editenv := testenv.Tool(t, "grub-editenv")
	p := filepath.Join(t.TempDir(), "grubenv")
	for _, args := range [][]string{{"create"}, {"set", "imprint_good_slot_b=0"}, {"set", "imprint_tries_slot_b=3"}} {
		if out, err := exec.Command(editenv, append([]string{p}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("grub-editenv %v: %v\n%s", args, err, out)
		}
	}
	if theirs := must(os.ReadFile(p)); !bytes.Equal(theirs, b) {
		t.Fatalf("grub-editenv wrote\n%q\nimprint wrote\n%q", theirs, b)
	}
}

func TestGrubConfigCountsAndFallsBack(t *testing.T) {
	f, m := twoSlots(t, 3)
	m.Loader = Grub
	if err := WriteMenu(f, m); err != nil {
		t.Fatal(err)
	}
	cfg := string(must(f.ReadFile(GrubCfg)))
	env, err := ParseGrubEnv(must(f.ReadFile(GrubEnv)))
	if err != nil {
		t.Fatal(err)
	}
	if env["imprint_tries_slot_b"] != "3" || env["imprint_good_slot_b"] != "0" || env["imprint_good_slot_a"] != "1" {
		t.Fatalf("grubenv: %v", env)
	}
	in := func(parts ...string) {
		t.Helper()
		at := 0
		for _, p := range parts {
			i := strings.Index(cfg[at:], p)
			if i < 0 {
				t.Fatalf("grub.cfg lacks %q (in order) after byte %d:\n%s", p, at, cfg)
			}
			at += i + len(p)
		}
	}
	// The default is picked at boot from grubenv, newest good-or-trying
	// slot first; b's entry counts down and saves before it boots.
	in(`set default="slot-b"`, "load_env --file /EFI/imprint/grubenv",
		`if [ "${imprint_good_slot_b}" = 1 ]`, `elif [ -n "${imprint_tries_slot_b}" -a "${imprint_tries_slot_b}" != 0 ]`, `set imprint_pick="slot-b"`,
		`if [ "${imprint_good_slot_a}" = 1 ]`, `set imprint_pick="slot-a"`,
		`set default="${imprint_pick}"`,
		`--id "slot-a"`, "linux /EFI/imprint/v1/vmlinuz root=PARTUUID=aa ro imprint.entry=slot-a",
		`--id "slot-b"`, `if [ "${imprint_good_slot_b}" != 1 ]`,
		`if [ "${imprint_tries_slot_b}" = 3 ]; then`, "set imprint_tries_slot_b=2",
		`elif [ "${imprint_tries_slot_b}" = 1 ]; then`, "set imprint_tries_slot_b=0",
		"save_env --file /EFI/imprint/grubenv imprint_tries_slot_b", "linux /EFI/imprint/v2/vmlinuz")
	if strings.Count(cfg, "save_env") != 1 {
		t.Fatal("a good entry counts its boots too")
	}
	if check, err := exec.LookPath("grub-script-check"); err == nil {
		p := filepath.Join(t.TempDir(), "grub.cfg")
		os.WriteFile(p, []byte(cfg), 0o644)
		if out, err := exec.Command(check, p).CombinedOutput(); err != nil {
			t.Fatalf("grub-script-check: %v\n%s", err, out)
		}
	} else {
		testenv.Skipf(t, "grub-script-check is not installed (grub-common)")
	}
	// GRUB counted two tries down; imprint reads them back and keeps other
	// variables when it writes the block again.
	env["imprint_tries_slot_b"] = "1"
	env["saved_entry"] = "x"
	f.WriteFile(GrubEnv, must(EncodeGrubEnv(env)))
	m2, err := ReadMenu(f)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := m2.Find("slot-b"); b.Tries == nil || b.Tries.Left != 1 || b.Tries.Done != 2 {
		t.Fatalf("GRUB's count read back as %+v", b.Tries)
	}
	if err := m2.Bless("slot-b"); err != nil {
		t.Fatal(err)
	}
	if err := WriteMenu(f, m2); err != nil {
		t.Fatal(err)
	}
	env2, _ := ParseGrubEnv(must(f.ReadFile(GrubEnv)))
	if env2["imprint_good_slot_b"] != "1" || env2["saved_entry"] != "x" {
		t.Fatalf("after bless: %v", env2)
	}
}

// A bless stopped after any number of file operations leaves the entry
// either still counting or blessed, and the default still the pattern.
func TestInterruptedBlessKeepsAConsistentEntry(t *testing.T) {
	for n := 0; n < 8; n++ {
		f, _ := twoSlots(t, 3)
		os.Rename(f.path(EntriesDir+"/imprint-slot-b+3.conf"), f.path(EntriesDir+"/imprint-slot-b+2-1.conf"))
		m, _ := ReadMenu(f)
		m.Bless("slot-b")
		err := WriteMenu(&failingFS{FS: f, left: n}, m)
		got, rerr := ReadMenu(f)
		if rerr != nil {
			t.Fatalf("after %d writes: %v", n, rerr)
		}
		b, _ := got.Find("slot-b")
		switch {
		case err == nil && b.Tries != nil:
			t.Fatalf("a finished bless left %+v", b.Tries)
		case b.Tries != nil && (b.Tries.Left != 2 || b.Tries.Done != 1):
			t.Fatalf("after %d writes: tries %+v", n, b.Tries)
		}
		if !strings.Contains(string(must(f.ReadFile(LoaderConf))), "default imprint-slot-*") {
			t.Fatalf("after %d writes the default is no longer the slots", n)
		}
	}
}

func fakeLoaderVar(t *testing.T, dir, name, value string) {
	t.Helper()
	u := utf16.Encode([]rune(value + "\x00"))
	b := make([]byte, 4+2*len(u))
	binary.LittleEndian.PutUint32(b, 6)
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[4+2*i:], c)
	}
	if err := os.WriteFile(filepath.Join(dir, name+"-"+LoaderVariable), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBootedEntryFromLoaderOrCmdline(t *testing.T) {
	vars := Efivars{Dir: t.TempDir()}
	if id, err := BootedEntry(vars, "ro imprint.entry=slot-a quiet"); err != nil || id != "slot-a" {
		t.Fatalf("from the command line: %q %v", id, err)
	}
	if _, err := BootedEntry(vars, "ro quiet"); !errors.Is(err, ErrUnknownBoot) {
		t.Fatalf("nothing to go by: %v", err)
	}
	fakeLoaderVar(t, vars.Dir, "LoaderEntrySelected", "imprint-slot-b+2-1.conf")
	if id, err := BootedEntry(vars, "imprint.entry=slot-a"); err != nil || id != "slot-b" {
		t.Fatalf("from LoaderEntrySelected: %q %v", id, err)
	}

	f, _ := twoSlots(t, 3)
	esp := NewESP(f)
	r, err := esp.BlessBooted(vars, "")
	if err != nil || !r.Changed || r.ID != "slot-b" {
		t.Fatalf("bless: %+v %v", r, err)
	}
	if !f.Exists(EntriesDir + "/imprint-slot-b.conf") {
		t.Fatalf("not renamed: %s", entryNames(t, f))
	}
	if r, err := esp.BlessBooted(Efivars{Dir: t.TempDir()}, "imprint.entry=diskless"); err != nil || r.Counted || r.Changed {
		t.Fatalf("bless of an uncounted entry: %+v %v", r, err)
	}
	if _, err := esp.BlessBooted(Efivars{Dir: t.TempDir()}, "imprint.entry=gone"); !errors.Is(err, ErrNoEntry) {
		t.Fatalf("bless of an entry not in the menu: %v", err)
	}
}

// A rollback does not go to a slot whose version ran out of tries
// without a good boot (blessing it would boot it for good, panic after
// panic); a slot marked bad by an earlier rollback (no boot tried) is
// fine to go back to.
func TestRollbackRefusesASlotThatFailedItsBoots(t *testing.T) {
	m := &Menu{}
	if err := m.SetSlotEntry("b", Entry{Linux: "/k2", Version: "2"}, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.SetSlotEntry("a", Entry{Linux: "/k3", Version: "3"}, 2); err != nil {
		t.Fatal(err)
	}
	a, _ := m.Find("slot-a")
	a.Tries = &Tries{Left: 0, Done: 2} // what the loader left after two failed boots
	if o := m.SlotOrder(); o[0].Slot != "b" {
		t.Fatalf("slot b should boot next: %+v", o)
	}
	if _, err := m.Rollback(); !errors.Is(err, ErrFailedSlot) || !strings.Contains(err.Error(), "slot a (3)") {
		t.Fatalf("rollback to the failed slot: %v", err)
	}
	if o := m.SlotOrder(); o[0].Slot != "b" || o[1].Tries.Left != 0 {
		t.Fatalf("a refused rollback changed the menu: %+v", o)
	}
	a.Tries = &Tries{Left: 0, Done: 0} // marked bad by a rollback, never tried
	if slot, err := m.Rollback(); err != nil || slot != "a" {
		t.Fatalf("rollback to a slot a rollback marked bad: %q %v", slot, err)
	}
}

// A slotted disk has no entry "local": `imprint boot default local` must
// give the boot back to the slots (loader.conf's pattern), not fail; a
// menu with neither refuses it, naming what it has.
func TestDefaultLocalMeansTheSlotsOnASlottedDisk(t *testing.T) {
	f, m := twoSlots(t, 2)
	if err := m.SetDefault("diskless"); err != nil {
		t.Fatal(err)
	}
	if err := m.SetDefault(TypeLocal); err != nil {
		t.Fatalf("default local on a slotted menu: %v", err)
	}
	if m.Default != "slot-b" {
		t.Fatalf("default is %q, want slot-b (the slot that boots next)", m.Default)
	}
	if err := WriteMenu(f, m); err != nil {
		t.Fatal(err)
	}
	if conf := string(must(f.ReadFile(LoaderConf))); !strings.Contains(conf, "\ndefault "+SlotPattern+"\n") {
		t.Fatalf("loader.conf does not default to the slots:\n%s", conf)
	}
	plain := &Menu{Loader: SystemdBoot, Entries: []Entry{{ID: "diskless", Type: TypeDiskless, Linux: "/k"}}}
	err := plain.SetDefault(TypeLocal)
	if !errors.Is(err, ErrNoEntry) || !strings.Contains(err.Error(), "diskless") {
		t.Fatalf("default local without local or slot entries: %v", err)
	}
}
