package layout

import (
	"crypto/rand"
	"fmt"
	"math"
	"sort"
)

// Align is where every partition starts and how sizes round: 1 MiB suits
// 512-byte and 4 KiB sectors and every SSD erase block we know of.
const Align = 1 << 20

// MaxPartitionSize bounds every partition size imprint accepts. It is far
// above any disk sold (1 PiB), and 128 partitions of it still sum well
// inside int64, so no size arithmetic on a validated layout can wrap.
const MaxPartitionSize = 1 << 50

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

// alignUp rounds n up to Align; it saturates at the largest aligned int64
// instead of wrapping, so a size that is too large stays too large.
func alignUp(n int64) int64 {
	if n > math.MaxInt64-(Align-1) {
		return math.MaxInt64 / Align * Align
	}
	return (n + Align - 1) / Align * Align
}

// addSize adds two non-negative sizes, saturating at MaxInt64: a sum that
// would wrap negative compares as "too large" everywhere instead of "fits".
func addSize(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

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
		n = addSize(n, alignUp(p.Size))
	}
	return addSize(n, alignUp(gptReserve(sectorSize)))
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
	if err := t.Check(); err != nil {
		return nil, fmt.Errorf("placing the layout: %w", err)
	}
	return t, nil
}

// lay places specs one after another from off, within length bytes: each
// rounded up to Align, the rest partition taking what the others leave (or
// left out when optional and too small). entry gives GPT entry numbers.
func lay(specs []Spec, off, length int64, entry func() (int, error)) ([]Placed, error) {
	fixed := int64(0)
	for _, p := range specs {
		if !p.Rest {
			fixed = addSize(fixed, alignUp(p.Size))
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

// Check is the last look at a plan before any byte of it is written: every
// partition has a GPT entry of its own, starts and ends on sector
// boundaries, lies between the primary GPT and the backup GPT, and
// overlaps no other. Place and PlaceBeside call it; a Table that came from
// elsewhere (a journal on the disk) should pass it before it is written.
func (t *Table) Check() error {
	ss := t.SectorSize
	if ss != 512 && ss != 4096 {
		return fmt.Errorf("%w: sector size %d: only 512 and 4096 are supported", ErrBadLayout, ss)
	}
	// Primary: protective MBR, GPT header, 16 KiB of entries. Backup: the
	// same entries and header in the last sectors of the disk.
	first := 2*ss + 16384
	last := t.DiskSize/ss*ss - gptReserve(ss)
	if last <= first {
		return fmt.Errorf("%w: a disk of %d bytes has no room between its GPTs", ErrBadLayout, t.DiskSize)
	}
	seen := map[int]string{}
	for _, p := range t.Partitions {
		where := fmt.Sprintf("partition %q", p.Name)
		if p.Index < 1 || p.Index > 128 {
			return fmt.Errorf("%w: %s: GPT entry %d (want 1 to 128)", ErrBadLayout, where, p.Index)
		}
		if other, ok := seen[p.Index]; ok {
			return fmt.Errorf("%w: %s: GPT entry %d is already %q", ErrBadLayout, where, p.Index, other)
		}
		seen[p.Index] = p.Name
		if p.Len <= 0 {
			return fmt.Errorf("%w: %s: length %d", ErrBadLayout, where, p.Len)
		}
		if p.Start%ss != 0 || p.Len%ss != 0 {
			return fmt.Errorf("%w: %s: start %d or length %d is not a multiple of the %d-byte sector", ErrBadLayout, where, p.Start, p.Len, ss)
		}
		if p.Start < first {
			return fmt.Errorf("%w: %s starts at byte %d, inside the primary GPT (which ends at %d)", ErrBadLayout, where, p.Start, first)
		}
		// Written as a subtraction: Start+Len could wrap.
		if p.Start > last || p.Len > last-p.Start {
			return fmt.Errorf("%w: %s (start %d, %s) runs past byte %d, where the backup GPT of this %s disk begins", ErrBadLayout, where, p.Start, HumanSize(p.Len), last, HumanSize(t.DiskSize))
		}
	}
	byStart := make([]Placed, len(t.Partitions))
	copy(byStart, t.Partitions)
	sort.Slice(byStart, func(i, j int) bool { return byStart[i].Start < byStart[j].Start })
	for i := 1; i < len(byStart); i++ {
		a, b := byStart[i-1], byStart[i]
		if a.Start+a.Len > b.Start {
			return fmt.Errorf("%w: partition %q (bytes %d-%d) overlaps partition %q (from %d)", ErrBadLayout, b.Name, b.Start, b.Start+b.Len, a.Name, a.Start)
		}
	}
	return nil
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
	if err := l.Validate(); err != nil {
		return nil, err
	}
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
	if err := t.Check(); err != nil {
		return nil, fmt.Errorf("placing the layout beside the existing partitions: %w", err)
	}
	return t, nil
}
