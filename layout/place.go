package layout

import (
	"crypto/rand"
	"fmt"
	"sort"
)

// Align is where every partition starts and how sizes round: 1 MiB suits
// 512-byte and 4 KiB sectors and every SSD erase block we know of.
const Align = 1 << 20

// Placed is a layout entry resolved against a target.
type Placed struct {
	Spec
	Index int    `json:"index"` // 1-based GPT entry
	Start int64  `json:"start"` // bytes from the start of the disk
	Len   int64  `json:"len"`   // bytes
	GUID  string `json:"partuuid"`
	// Attrs are the GPT attribute bits, kept for partitions that were
	// already on the disk.
	Attrs uint64 `json:"attrs,omitempty"`
}

// Table is a layout placed on a disk of a given size.
type Table struct {
	DiskGUID   string   `json:"disk_guid"`
	SectorSize int64    `json:"sector_size"`
	DiskSize   int64    `json:"disk_size"`
	Partitions []Placed `json:"partitions"`
}

// Find returns the placed partition named name.
func (t *Table) Find(name string) (Placed, bool) {
	for _, p := range t.Partitions {
		if p.Name == name {
			return p, true
		}
	}
	return Placed{}, false
}

// ByRole returns the first partition with role r.
func (t *Table) ByRole(r Role) (Placed, bool) {
	for _, p := range t.Partitions {
		if p.Role == r {
			return p, true
		}
	}
	return Placed{}, false
}

func alignUp(n int64) int64 { return (n + Align - 1) / Align * Align }

// gptReserve is what the backup GPT needs at the end of the disk: the
// 16 KiB entry array plus its header sector.
func gptReserve(sectorSize int64) int64 { return 16384 + sectorSize }

// MinSize is the smallest disk the layout fits on.
func MinSize(l Layout, sectorSize int64) int64 {
	n := int64(Align)
	for _, p := range l.Partitions {
		if p.Rest && p.Optional {
			continue
		}
		n += alignUp(p.Size)
	}
	return n + alignUp(gptReserve(sectorSize))
}

// Place lays l out on a disk of diskSize bytes with the given logical sector
// size, giving every partition a new random PARTUUID and the disk a new GUID.
// Partitions start on 1 MiB boundaries in layout order; a "rest" partition
// ends on the last 1 MiB boundary before the backup GPT.
func Place(l Layout, diskSize, sectorSize int64) (*Table, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("sector size %d: only 512 and 4096 are supported", sectorSize)
	}
	need := MinSize(l, sectorSize)
	if diskSize < need {
		return nil, fmt.Errorf("%w: the target has %s, the layout needs %s", ErrTooSmall, HumanSize(diskSize), HumanSize(need))
	}
	end := (diskSize - gptReserve(sectorSize)) / Align * Align
	t := &Table{DiskGUID: newGUID(), SectorSize: sectorSize, DiskSize: diskSize}
	next := 0
	parts, err := lay(l.Partitions, Align, end-Align, func() (int, error) { next++; return next, nil })
	if err != nil {
		return nil, err
	}
	t.Partitions = parts
	return t, nil
}

// lay places specs one after another from off, within length bytes: each
// rounded up to Align, the rest partition taking what the others leave (or
// left out when optional and too small). entry gives GPT entry numbers.
func lay(specs []Spec, off, length int64, entry func() (int, error)) ([]Placed, error) {
	fixed := int64(0)
	for _, p := range specs {
		if !p.Rest {
			fixed += alignUp(p.Size)
		}
	}
	restLen := length - fixed
	var out []Placed
	for _, p := range specs {
		n := alignUp(p.Size)
		if p.Rest {
			if restLen < p.Size {
				if p.Optional {
					continue
				}
				return nil, fmt.Errorf("%w: partition %q needs at least %s, %s is left", ErrTooSmall, p.Name, HumanSize(p.Size), HumanSize(restLen))
			}
			n = restLen
		}
		idx, err := entry()
		if err != nil {
			return nil, err
		}
		out = append(out, Placed{Spec: p, Index: idx, Start: off, Len: n, GUID: newGUID()})
		off += n
	}
	return out, nil
}

func newGUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// HumanSize prints bytes in binary units with one decimal.
func HumanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	s := fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
	return s
}

// Region is a free stretch of a disk.
type Region struct{ Start, Len int64 }

// FreeRegions lists the 1 MiB-aligned gaps between existing partitions.
func FreeRegions(existing []GPTPartition, diskSize, sectorSize int64) []Region {
	type span struct{ a, b int64 }
	used := []span{{0, Align}, {(diskSize - gptReserve(sectorSize)) / Align * Align, diskSize}}
	for _, p := range existing {
		used = append(used, span{p.Start, p.Start + p.Len})
	}
	sort.Slice(used, func(i, j int) bool { return used[i].a < used[j].a })
	var out []Region
	end := int64(0)
	for _, u := range used {
		start := alignUp(end)
		if u.a/Align*Align > start {
			out = append(out, Region{start, u.a/Align*Align - start})
		}
		end = max(end, u.b)
	}
	return out
}

// PlaceBeside lays l out in the largest free region of a disk that keeps
// all its existing partitions (dual boot). Existing partitions keep their
// entries, GUIDs and attributes; new ones get unused entry numbers and new
// PARTUUIDs. Partitions with role esp in l are skipped when reuseESP is
// set: the disk's own ESP serves.
func PlaceBeside(l Layout, existing []GPTPartition, diskGUID string, diskSize, sectorSize int64, reuseESP bool) (*Table, error) {
	var want Layout
	for _, p := range l.Partitions {
		if p.Role == RoleESP && reuseESP {
			continue
		}
		want.Partitions = append(want.Partitions, p)
	}
	t := &Table{DiskGUID: diskGUID, SectorSize: sectorSize, DiskSize: diskSize}
	usedIdx := map[int]bool{}
	for _, p := range existing {
		role := RoleKeep
		if p.Type == TypeESP {
			role = RoleESP
		}
		t.Partitions = append(t.Partitions, Placed{Spec: Spec{Name: p.Name, Type: p.Type, Role: role, Size: p.Len}, Index: p.Index, Start: p.Start, Len: p.Len, GUID: p.GUID, Attrs: p.Attrs})
		usedIdx[p.Index] = true
	}
	if len(want.Partitions) == 0 {
		return t, nil
	}
	regions := FreeRegions(existing, diskSize, sectorSize)
	var best Region
	for _, r := range regions {
		if r.Len > best.Len {
			best = r
		}
	}
	need := MinSize(want, sectorSize) - Align - alignUp(gptReserve(sectorSize))
	if best.Len < need {
		return nil, fmt.Errorf("%w: the largest free region is %s (at %s), the image needs %s beside the existing partitions", ErrTooSmall, HumanSize(best.Len), HumanSize(best.Start), HumanSize(need))
	}
	idx := 0
	parts, err := lay(want.Partitions, best.Start, best.Len, func() (int, error) {
		for idx++; usedIdx[idx]; idx++ {
		}
		if idx > 128 {
			return 0, fmt.Errorf("%w: the GPT has no free entry left", ErrBadLayout)
		}
		return idx, nil
	})
	if err != nil {
		return nil, err
	}
	t.Partitions = append(t.Partitions, parts...)
	sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i].Index < t.Partitions[j].Index })
	return t, nil
}
