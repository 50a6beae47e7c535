package cli

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/bootloader"
)

// The verbs over a mounted ESP: slots shows both entries, bless marks the
// booted one good (found by imprint.entry=), rollback switches by marking.
func TestSlotsBlessAndRollback(t *testing.T) {
	esp := t.TempDir()
	m := &bootloader.Menu{Loader: bootloader.SystemdBoot, Firmware: bootloader.UEFI}
	m.SetSlotEntry("a", bootloader.Entry{Title: "v1", Linux: "/k1", Version: "v1"}, 0)
	m.SetSlotEntry("b", bootloader.Entry{Title: "v2", Linux: "/k2", Version: "v2"}, 3)
	if err := bootloader.WriteMenu(bootloader.DirFS(esp), m); err != nil {
		t.Fatal(err)
	}
	cmdline := t.TempDir() + "/cmdline"
	writeFile(t, cmdline, "ro imprint.entry=slot-b\n")
	slots := func() []bootloader.SlotState {
		t.Helper()
		var st []bootloader.SlotState
		if err := json.Unmarshal([]byte(mustRun(t, "slots", "--esp", esp, "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := slots(); len(st) != 2 || !st[1].Next || st[1].Tries.Left != 3 || !st[0].Blessed {
		t.Fatalf("slots: %+v", st)
	}
	if out := mustRun(t, "slots", "--esp", esp); !strings.Contains(out, "* slot b  v2") || !strings.Contains(out, "3 tries left") {
		t.Fatalf("slots text:\n%s", out)
	}
	if out := mustRun(t, "bless", "--esp", esp, "--efivars", t.TempDir(), "--cmdline", cmdline); !strings.Contains(out, "entry slot-b is good") {
		t.Fatalf("bless: %s", out)
	}
	if st := slots(); !st[1].Blessed || !st[1].Next {
		t.Fatalf("after bless: %+v", st)
	}
	if out := mustRun(t, "rollback", "--esp", esp); !strings.Contains(out, "slot a (v1) boots next") {
		t.Fatalf("rollback: %s", out)
	}
	if st := slots(); !st[0].Next || !st[1].Bad {
		t.Fatalf("after rollback: %+v", st)
	}
	// From a host: bless a named entry (slot b is bad after the rollback:
	// blessing makes it good and, being newer, next).
	if out := mustRun(t, "bless", "--esp", esp, "--entry", "slot-b"); !strings.Contains(out, "entry slot-b is good") {
		t.Fatalf("bless --entry: %s", out)
	}
	if st := slots(); !st[1].Next || !st[1].Blessed {
		t.Fatalf("after bless --entry: %+v", st)
	}
	writeFile(t, cmdline, "ro quiet\n")
	if code, _, errs := run(t, "bless", "--esp", esp, "--efivars", t.TempDir(), "--cmdline", cmdline); code == 0 || !strings.Contains(errs, "imprint.entry=") {
		t.Fatalf("bless without a booted entry: exit %d %s", code, errs)
	}
	one := t.TempDir()
	m1 := &bootloader.Menu{Default: "local", Entries: []bootloader.Entry{{ID: "local", Title: "L", Linux: "/k"}}}
	bootloader.WriteMenu(bootloader.DirFS(one), m1)
	if code, _, errs := run(t, "rollback", "--esp", one); code == 0 || !strings.Contains(errs, "one root slot") {
		t.Fatalf("rollback with one slot: exit %d %s", code, errs)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
