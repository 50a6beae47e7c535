package disk

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/imprint-dev/imprint/layout"
)

// newESP makes a disk file with a 100 MiB ESP formatted by FormatFAT.
func newESP(t *testing.T) (*Disk, layout.Placed) {
	t.Helper()
	d, _ := newDiskFile(t, 128<<20)
	tab, err := layout.Place(layout.Layout{Partitions: []layout.Spec{{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: 100 << 20}}}, d.Size(), 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteGPT(d, tab); err != nil {
		t.Fatal(err)
	}
	if _, err := FormatFAT(d, tab.Partitions[0], "ESP"); err != nil {
		t.Fatal(err)
	}
	return d, tab.Partitions[0]
}

// fatCopies returns both FAT copies' bytes.
func fatCopies(t *testing.T, d Device, esp layout.Placed) ([]byte, []byte) {
	t.Helper()
	g, err := readGeom(d, esp.Start)
	if err != nil {
		t.Fatal(err)
	}
	one, two := make([]byte, g.fatSz*g.bps), make([]byte, g.fatSz*g.bps)
	d.ReadAt(one, g.entryOff(0, 0))
	d.ReadAt(two, g.entryOff(0, 1))
	return one, two
}

// fsckClean runs fsck.fat -n on the ESP's bytes.
func fsckClean(t *testing.T, d *Disk, esp layout.Placed) {
	t.Helper()
	fsck := tool(t, "fsck.fat")
	p := filepath.Join(t.TempDir(), "esp.img")
	extract(t, d, esp, p)
	if out, err := exec.Command(fsck, "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("fsck.fat -n: %v\n%s", err, out)
	}
}

// TestDifferingFATCopiesReadTheFirst damages the second FAT as a crash
// between the two copies' writes leaves it: imprint reads the first copy,
// as firmware and fsck.fat do, and its next write makes the copies agree.
func TestDifferingFATCopiesReadTheFirst(t *testing.T) {
	d, esp := newESP(t)
	fat, err := OpenFAT(d, esp.Start, esp.Len)
	if err != nil {
		t.Fatal(err)
	}
	if err := fat.WriteFile("loader/entries/a.conf", []byte("title A\n")); err != nil {
		t.Fatal(err)
	}
	g, _ := readGeom(d, esp.Start)
	// FAT2 loses every allocation: the state of a crash before FAT2 was
	// written for the first time.
	one, _ := fatCopies(t, d, esp)
	stale := make([]byte, len(one))
	copy(stale[:12], one[:12])
	d.WriteAt(stale, g.entryOff(0, 1))

	fat, err = OpenFAT(d, esp.Start, esp.Len)
	if err != nil {
		t.Fatalf("open with differing FAT copies: %v", err)
	}
	if b, err := fat.ReadFile("loader/entries/a.conf"); err != nil || string(b) != "title A\n" {
		t.Fatalf("ReadFile: %q, %v", b, err)
	}
	if ents, err := fat.ReadDir("loader/entries"); err != nil || len(ents) != 1 {
		t.Fatalf("ReadDir: %d entries, %v", len(ents), err)
	}
	if err := fat.WriteFile("loader/entries/b.conf", []byte("title B\n")); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	if one, two := fatCopies(t, d, esp); !bytes.Equal(one, two) {
		t.Fatal("the FAT copies still differ after a write")
	}
	d.Sync()
	fsckClean(t, d, esp)
}

var errDead = errors.New("device died (simulated crash)")

// dyingDevice lets n writes through and fails every later one: the disk as
// a crash leaves it after the nth write.
type dyingDevice struct {
	Device
	n int
}

func (d *dyingDevice) WriteAt(p []byte, off int64) (int, error) {
	if d.n <= 0 {
		return 0, errDead
	}
	d.n--
	return d.Device.WriteAt(p, off)
}

// TestAMenuEditCrashedAtEveryWriteStaysReadable replaces a boot entry and
// cuts the write off after 0, 1, 2, ... device writes. After each cut the
// ESP must open, the entry must read as the old or the new text, and
// writing the entry again must succeed and leave the FAT copies equal.
func TestAMenuEditCrashedAtEveryWriteStaysReadable(t *testing.T) {
	const name = "loader/loader.conf"
	oldText, newText := []byte("default old.conf\ntimeout 3\n"), []byte("default new.conf\ntimeout 5\n")
	finished := false
	for n := 0; !finished && n < 300; n++ {
		t.Run(fmt.Sprint("after ", n, " writes"), func(t *testing.T) {
			d, esp := newESP(t)
			fat, err := OpenFAT(d, esp.Start, esp.Len)
			if err != nil {
				t.Fatal(err)
			}
			if err := fat.WriteFile(name, oldText); err != nil {
				t.Fatal(err)
			}
			dying := &dyingDevice{Device: d, n: n}
			fat, err = OpenFAT(dying, esp.Start, esp.Len)
			if err != nil {
				t.Fatal(err)
			}
			if err := fat.WriteFile(name, newText); err == nil {
				finished = true // the edit fits in n writes: no cut left to try
				return
			}
			fat, err = OpenFAT(d, esp.Start, esp.Len)
			if err != nil {
				t.Fatalf("open after the crash: %v", err)
			}
			b, err := fat.ReadFile(name)
			if err != nil || !bytes.Equal(b, oldText) && !bytes.Equal(b, newText) {
				t.Fatalf("after the crash the entry reads %q, %v; want the old or the new text", b, err)
			}
			if err := fat.WriteFile(name, newText); err != nil {
				t.Fatalf("rerun of the edit: %v", err)
			}
			if b, err := fat.ReadFile(name); err != nil || !bytes.Equal(b, newText) {
				t.Fatalf("after the rerun: %q, %v", b, err)
			}
			if one, two := fatCopies(t, d, esp); !bytes.Equal(one, two) {
				t.Fatal("the FAT copies differ after the rerun")
			}
			// A cut can leak clusters (of the ".new" file, or of a file
			// removed but not yet freed); the rerun reclaims them.
			fsckClean(t, d, esp)
		})
	}
	if !finished {
		t.Fatal("the edit never finished within 300 writes")
	}
}
