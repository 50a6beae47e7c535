package layout

import (
	"errors"
	"strings"
	"testing"
)

func testLayout() Layout {
	return Layout{Partitions: []Spec{
		{Name: "esp", Type: TypeESP, Role: RoleESP, Size: 100 << 20},
		{Name: "root", Type: TypeRootX86_64, Role: RoleImage, Size: 300<<20 + 4096},
		{Name: "scratch", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 64 << 20, Rest: true, Optional: true, FS: "ext4"},
	}}
}

func TestPlaceAlignsAndResolvesRest(t *testing.T) {
	for _, ss := range []int64{512, 4096} {
		tab, err := Place(testLayout(), 1<<30, ss)
		if err != nil {
			t.Fatal(err)
		}
		if len(tab.Partitions) != 3 {
			t.Fatalf("%d partitions", len(tab.Partitions))
		}
		end := int64(0)
		for _, p := range tab.Partitions {
			if p.Start%Align != 0 || p.Len%Align != 0 {
				t.Errorf("%s: start %d len %d not 1 MiB aligned", p.Name, p.Start, p.Len)
			}
			if p.Start < end {
				t.Errorf("%s overlaps the partition before", p.Name)
			}
			end = p.Start + p.Len
		}
		if root := tab.Partitions[1]; root.Len != 301<<20 {
			t.Errorf("root rounded to %d, want 301 MiB", root.Len)
		}
		if end > 1<<30-16384-ss {
			t.Errorf("rest partition ends at %d, into the backup GPT", end)
		}
		if 1<<30-end > 2*Align {
			t.Errorf("rest partition leaves %d bytes unused", 1<<30-end)
		}
		if tab.Partitions[0].GUID == tab.Partitions[1].GUID || !isGUID(tab.Partitions[0].GUID) {
			t.Error("PARTUUIDs are not fresh GUIDs")
		}
	}
}

func TestPlaceOptionalRestIsLeftOutWhenTight(t *testing.T) {
	tab, err := Place(testLayout(), 420<<20, 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Partitions) != 2 {
		t.Fatalf("want the optional scratch left out, got %d partitions", len(tab.Partitions))
	}
}

func TestPlaceTooSmallNamesBothSizes(t *testing.T) {
	_, err := Place(testLayout(), 200<<20, 512)
	if !errors.Is(err, ErrTooSmall) {
		t.Fatalf("got %v, want ErrTooSmall", err)
	}
	if !strings.Contains(err.Error(), "200.0 MiB") || !strings.Contains(err.Error(), "403.0 MiB") {
		t.Fatalf("error %q does not give both sizes", err)
	}
	l := testLayout()
	l.Partitions[2].Optional = false
	_, err = Place(l, 420<<20, 512)
	if !errors.Is(err, ErrTooSmall) || !strings.Contains(err.Error(), "467.0 MiB") {
		t.Fatalf("mandatory rest partition: %v", err)
	}
}
