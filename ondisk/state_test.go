package ondisk

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/layout"
)

// A disk without imprint's record says why, and still gives what it
// could read: the GPT, the ESP, and a current slot with nothing in it.
func TestReadDiskWithoutARecord(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.img")
	os.WriteFile(p, nil, 0o644)
	os.Truncate(p, 160<<20)
	dev, err := disk.OpenDisk(p, disk.OpenOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	place := func(specs ...layout.Spec) *layout.Table {
		tab, err := layout.Place(layout.Layout{Partitions: specs}, dev.Size(), dev.SectorSize())
		if err != nil {
			t.Fatal(err)
		}
		if err := disk.WriteGPT(dev, tab); err != nil {
			t.Fatal(err)
		}
		return tab
	}
	data := layout.Spec{Name: "data", Type: layout.TypeLinuxGeneric, Role: layout.RoleLocal, Size: 8 << 20}
	place(data)
	od, err := ReadDisk(dev)
	if !errors.Is(err, ErrNotDeployed) || !strings.Contains(err.Error(), "no EFI System Partition") || od.Slot == nil || od.State != nil {
		t.Fatalf("a disk without an ESP: %v %+v", err, od)
	}

	tab := place(layout.Spec{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: 100 << 20}, data)
	esp, _ := layout.FindESP(func() []layout.GPTPartition {
		_, parts, _ := disk.ReadGPT(dev)
		return parts
	}())
	placed, _ := tab.Find("esp")
	if esp.Start != placed.Start {
		t.Fatalf("FindESP found %+v, the table placed the ESP at %d", esp, placed.Start)
	}
	fat, err := disk.FormatFAT(dev, placed, "ESP")
	if err != nil {
		t.Fatal(err)
	}
	od, err = ReadDisk(dev)
	if !errors.Is(err, ErrNotDeployed) || !strings.Contains(err.Error(), StateFile) || od.ESP == nil {
		t.Fatalf("an ESP without a record: %v", err)
	}

	st := &State{Format: 1, ImageID: strings.Repeat("a", 64), Name: "n", Version: "1", Status: StatusWriting, Started: time.Unix(1700000000, 0).UTC(), Table: tab}
	if err := WriteState(dev, fat, st); err != nil {
		t.Fatal(err)
	}
	if _, err = ReadDisk(dev); !errors.Is(err, ErrNotDeployed) || !strings.Contains(err.Error(), ManifestFile) {
		t.Fatalf("a state without its manifest: %v", err)
	}
}
