package deploy

import (
	"errors"
	"fmt"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
)

// SlotGrowthMin is the least room a slot leaves above its content.
const SlotGrowthMin = 64 << 20

// DefaultSlotSize is the size of a root slot for content of n bytes: a
// quarter more, at least SlotGrowthMin more, rounded up to 1 MiB. Later
// versions built on this one (build --base) grow in place, and a slot is
// never resized by a sync, so it is sized for growth when deployed.
func DefaultSlotSize(n int64) int64 {
	g := max(n/4, SlotGrowthMin)
	return (n + g + layout.Align - 1) / layout.Align * layout.Align
}

// SlotLayout turns a fitted layout into the layout of a disk with root
// slots: every image partition P becomes P-a and P-b of P's type, sized
// size (the root's; 0 for DefaultSlotSize) or, for other image
// partitions, their default. Local partitions and the ESP stay shared.
func SlotLayout(l layout.Layout, m *image.Manifest, size int64) (layout.Layout, error) {
	rp, err := m.RootPartition()
	if err != nil {
		return layout.Layout{}, err
	}
	var out layout.Layout
	for _, s := range l.Partitions {
		if s.Role != layout.RoleImage {
			out.Partitions = append(out.Partitions, s)
			continue
		}
		p, _ := m.Partition(s.Name)
		sz := max(s.Size, DefaultSlotSize(p.Content.Size))
		if s.Name == rp.Name && size > 0 {
			if size < p.Content.Size {
				return layout.Layout{}, fmt.Errorf("--slot-size %s is smaller than the root's content, %s", layout.HumanSize(size), layout.HumanSize(p.Content.Size))
			}
			sz = (size + layout.Align - 1) / layout.Align * layout.Align
		}
		for _, slot := range []string{ondisk.SlotA, ondisk.SlotB} {
			n := ondisk.SlotPartition(s.Name, slot)
			if len(n) > 36 {
				return layout.Layout{}, fmt.Errorf("%w: partition %q: the slot name %q is longer than 36 characters", layout.ErrBadLayout, s.Name, n)
			}
			out.Partitions = append(out.Partitions, layout.Spec{Name: n, Type: s.Type, Role: layout.RoleImage, Size: sz})
		}
	}
	return out, out.Validate()
}

// placeSlots places the layout with one or two root slots as o asks: two
// when asked, one when asked, and with 0 two when they fit, else one.
func placeSlots(plan *Plan, m *image.Manifest, lay layout.Layout, o PlanOptions, size, sector int64) (*layout.Table, error) {
	switch o.Slots {
	case 0, 1, 2:
	default:
		return nil, fmt.Errorf("--slots %d: want 1 or 2", o.Slots)
	}
	if o.Slots != 1 {
		sl, err := SlotLayout(lay, m, o.SlotSize)
		if err != nil {
			return nil, err
		}
		t, err := layout.Place(sl, size, sector)
		if err == nil {
			plan.Slots, plan.Slot = 2, ondisk.SlotA
			return t, nil
		}
		if o.Slots == 2 || !errors.Is(err, layout.ErrTooSmall) {
			return nil, fmt.Errorf("two root slots: %w", err)
		}
	}
	plan.Slots = 1
	return layout.Place(lay, size, sector)
}
