package layout

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// hugeLayouts are the sizes that overflowed int64 arithmetic: one local
// partition of MaxInt64 bytes, and two of 2^62 whose sum wraps negative.
func hugeLayouts() map[string]Layout {
	esp := Spec{Name: "esp", Type: TypeESP, Role: RoleESP, Size: 64 << 20}
	return map[string]Layout{
		"one of MaxInt64": {Partitions: []Spec{esp,
			{Name: "big", Type: TypeLinuxGeneric, Role: RoleLocal, Size: math.MaxInt64}}},
		"two of 2^62": {Partitions: []Spec{esp,
			{Name: "a", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 1 << 62},
			{Name: "b", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 1 << 62}}},
		"rest minimum of 2^62": {Partitions: []Spec{esp,
			{Name: "r", Type: TypeLinuxGeneric, Role: RoleLocal, Size: 1 << 62, Rest: true}}},
	}
}

func TestHugeSizesAreRefusedNotWrapped(t *testing.T) {
	for name, l := range hugeLayouts() {
		t.Run(name, func(t *testing.T) {
			err := l.Validate()
			if !errors.Is(err, ErrBadLayout) || !strings.Contains(err.Error(), "larger than the 1.0 PiB limit") {
				t.Fatalf("Validate: %v; want a bad layout naming the limit", err)
			}
			if _, err := Place(l, 1<<30, 512); err == nil {
				t.Fatal("Place accepted it on a 1 GiB disk")
			}
			if _, err := PlaceBeside(l, nil, newGUID(), 1<<30, 512, false); err == nil {
				t.Fatal("PlaceBeside accepted it on a 1 GiB disk")
			}
		})
	}
}

func TestLayoutFileRefusesSizesAboveTheLimit(t *testing.T) {
	for _, text := range []string{
		"esp esp 64M esp\nbig linux-generic 4194304T local\n",
		"esp esp 64M esp\nbig linux-generic rest:2048T local\n",
	} {
		_, err := ParseLayout(strings.NewReader(text))
		if err == nil || !strings.Contains(err.Error(), "1.0 PiB limit") {
			t.Errorf("%q: %v; want the limit named", text, err)
		}
	}
}

func TestTableCheckRefusesPartitionsOutsideTheDisk(t *testing.T) {
	good := func() *Table {
		tab, err := Place(testLayout(), 1<<30, 512)
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	if err := good().Check(); err != nil {
		t.Fatalf("a placed table fails its own check: %v", err)
	}
	for _, tc := range []struct {
		name   string
		break_ func(*Table)
		want   string
	}{
		{"past the end", func(t *Table) { t.Partitions[2].Len += 4 << 20 }, "backup GPT"},
		{"into the primary GPT", func(t *Table) { t.Partitions[0].Start = 512 }, "primary GPT"},
		{"overlap", func(t *Table) { t.Partitions[1].Start -= 1 << 20 }, "overlaps"},
		{"wraps", func(t *Table) { t.Partitions[2].Len = math.MaxInt64 / 512 * 512 }, "backup GPT"},
		{"empty", func(t *Table) { t.Partitions[1].Len = 0 }, "length"},
		{"unaligned", func(t *Table) { t.Partitions[1].Len += 100 }, "sector"},
		{"entry twice", func(t *Table) { t.Partitions[1].Index = 1 }, "entry 1"},
		{"entry 129", func(t *Table) { t.Partitions[1].Index = 129 }, "entry 129"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := good()
			tc.break_(tab)
			err := tab.Check()
			if !errors.Is(err, ErrBadLayout) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: %v; want a bad layout mentioning %q", err, tc.want)
			}
		})
	}
}
