package bootloader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/layout"
)

var errPowerLost = errors.New("power lost")

// dyingDevice fails every write after the first n: the disk as a kill or
// a power cut leaves it.
type dyingDevice struct {
	disk.Device
	n int
}

func (d *dyingDevice) WriteAt(p []byte, off int64) (int, error) {
	if d.n <= 0 {
		return 0, errPowerLost
	}
	d.n--
	return d.Device.WriteAt(p, off)
}

// TestMenuEditsKilledAtEveryWrite: boot add, remove and default on a FAT
// ESP, cut off after 0, 1, 2, ... device writes. After each cut the menu
// must read, the same edit run again must succeed, and the ESP must be
// clean for fsck.fat -n (no leaked clusters, equal FAT copies).
func TestMenuEditsKilledAtEveryWrite(t *testing.T) {
	fsck := testenv.Tool(t, "fsck.fat")
	edits := []struct {
		name string
		do   func(e *ESP) error
	}{
		{"add", func(e *ESP) error {
			_, err := e.AddEntry(Entry{ID: "alt", Title: "Alternative", Linux: "/EFI/imprint/v1/vmlinuz", Options: "ro"}, false)
			if errors.Is(err, ErrEntryExists) {
				return nil // the cut run got as far as menu.json
			}
			return err
		}},
		{"remove", func(e *ESP) error {
			_, err := e.RemoveEntry("diskless")
			if errors.Is(err, ErrNoEntry) {
				return nil
			}
			return err
		}},
		{"default", func(e *ESP) error { _, err := e.SetDefault("netboot", nil); return err }},
	}
	// One installed disk, copied for every cut.
	template, espP := espDisk(t, true)
	func() {
		dev, err := disk.OpenDisk(template, disk.OpenOptions{Write: true})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		fat, err := disk.OpenFAT(dev, espP.Start, espP.Len)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Install(context.Background(), fat, testInstall(t, fat)); err != nil {
			t.Fatal(err)
		}
	}()
	for _, ed := range edits {
		t.Run(ed.name, func(t *testing.T) {
			finished := false
			// Every cut point early on (where the menu's files are
			// replaced), then every fifth: the normal test run stays fast.
			for n := 0; !finished && n < 400; n += map[bool]int{true: 1, false: 5}[n < 40] {
				p := filepath.Join(t.TempDir(), "disk.img")
				if out, err := exec.Command("cp", "--sparse=always", template, p).CombinedOutput(); err != nil {
					t.Fatalf("cp: %v %s", err, out)
				}
				dev, err := disk.OpenDisk(p, disk.OpenOptions{Write: true})
				if err != nil {
					t.Fatal(err)
				}
				cut, err := disk.OpenFAT(&dyingDevice{Device: dev, n: n}, espP.Start, espP.Len)
				if err != nil {
					t.Fatal(err)
				}
				if err := ed.do(NewESP(cut)); err == nil {
					finished = true
				}
				dev.Close()
				// The rerun is the command's: imprint boot ... --disk.
				esp, err := OpenDiskESP(p, true)
				if err != nil {
					t.Fatalf("cut after %d writes: the ESP does not open: %v", n, err)
				}
				if _, err := esp.Menu(); err != nil {
					t.Fatalf("cut after %d writes: the menu does not read: %v", n, err)
				}
				if err := ed.do(esp); err != nil {
					t.Fatalf("cut after %d writes: the rerun failed: %v", n, err)
				}
				if err := esp.Close(); err != nil {
					t.Fatal(err)
				}
				fsckESP(t, fsck, p, espP, fmt.Sprintf("cut after %d writes, then a rerun", n))
			}
			if !finished {
				t.Fatal("the edit never finished within 400 writes")
			}
		})
	}
}

func fsckESP(t *testing.T, fsck string, p string, esp layout.Placed, when string) {
	t.Helper()
	dev, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	img := filepath.Join(t.TempDir(), "esp.img")
	out, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(dev, esp.Start, esp.Len)); err != nil {
		t.Fatal(err)
	}
	out.Close()
	if b, err := exec.Command(fsck, "-n", img).CombinedOutput(); err != nil {
		t.Fatalf("%s: fsck.fat -n: %v\n%s", when, err, b)
	}
	os.Remove(img)
}
