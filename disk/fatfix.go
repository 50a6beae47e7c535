package disk

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf16"
)

// go-diskfs v1.9.4 leaves two marks that fsck.fat reports: a removed file's
// clusters stay allocated, and a directory made in the root gets a ".."
// entry pointing at the root's cluster instead of 0. fatGeom reads the
// on-disk structures directly to mend both; the FAT is reopened afterwards
// because go-diskfs keeps its own copy of the table in memory.
type fatGeom struct {
	start, bps, spc, rsvd, nfats, fatSz int64
	root                                uint32
}

func readGeom(dev Device, start int64) (fatGeom, error) {
	b := make([]byte, 512)
	if _, err := dev.ReadAt(b, start); err != nil {
		return fatGeom{}, err
	}
	g := fatGeom{
		start: start,
		bps:   int64(binary.LittleEndian.Uint16(b[11:])),
		spc:   int64(b[13]),
		rsvd:  int64(binary.LittleEndian.Uint16(b[14:])),
		nfats: int64(b[16]),
		fatSz: int64(binary.LittleEndian.Uint32(b[36:])),
		root:  binary.LittleEndian.Uint32(b[44:]),
	}
	if g.bps == 0 || g.spc == 0 || g.nfats == 0 || g.fatSz == 0 || g.root < 2 {
		return fatGeom{}, fmt.Errorf("not a FAT32 boot sector at offset %d", start)
	}
	return g, nil
}

func (g fatGeom) clusterBytes() int64 { return g.bps * g.spc }

func (g fatGeom) clusterOff(c uint32) int64 {
	data := g.start + (g.rsvd+g.nfats*g.fatSz)*g.bps
	return data + int64(c-2)*g.clusterBytes()
}

func (g fatGeom) entryOff(c uint32, copyN int64) int64 {
	return g.start + (g.rsvd+copyN*g.fatSz)*g.bps + int64(c)*4
}

func (g fatGeom) next(dev Device, c uint32) (uint32, error) {
	var b [4]byte
	if _, err := dev.ReadAt(b[:], g.entryOff(c, 0)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]) & 0x0FFFFFFF, nil
}

func (g fatGeom) chain(dev Device, c uint32) ([]uint32, error) {
	var out []uint32
	for c >= 2 && c < 0x0FFFFFF7 {
		out = append(out, c)
		if len(out) > 1<<22 {
			return nil, fmt.Errorf("FAT cluster chain loops")
		}
		n, err := g.next(dev, c)
		if err != nil {
			return nil, err
		}
		c = n
	}
	return out, nil
}

func (g fatGeom) free(dev Device, clusters []uint32) error {
	// The whole first copy before the second: a crash between them leaves
	// the second holding allocations the first (the one read) has freed,
	// which costs nothing but leaked clusters until the next edit mends it.
	var zero [4]byte
	for i := range g.nfats {
		for _, c := range clusters {
			if _, err := dev.WriteAt(zero[:], g.entryOff(c, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// lookup finds the directory entry of name ("a/b") and returns the entry's
// byte offset and its first cluster.
func (g fatGeom) lookup(dev Device, name string) (off int64, cluster uint32, err error) {
	dir := g.root
	parts := strings.Split(strings.Trim(name, "/"), "/")
	for i, part := range parts {
		off, cluster, err = g.find(dev, dir, part)
		if err != nil {
			return 0, 0, err
		}
		if off < 0 {
			return 0, 0, fmt.Errorf("%s: not found", strings.Join(parts[:i+1], "/"))
		}
		dir = cluster
	}
	return off, cluster, nil
}

func (g fatGeom) find(dev Device, dir uint32, name string) (int64, uint32, error) {
	clusters, err := g.chain(dev, dir)
	if err != nil {
		return 0, 0, err
	}
	buf := make([]byte, g.clusterBytes())
	var lfn []uint16
	for _, c := range clusters {
		if _, err := dev.ReadAt(buf, g.clusterOff(c)); err != nil {
			return 0, 0, err
		}
		for o := 0; o+32 <= len(buf); o += 32 {
			e := buf[o : o+32]
			switch {
			case e[0] == 0:
				return -1, 0, nil
			case e[0] == 0xE5:
				lfn = nil
				continue
			case e[11] == 0x0F:
				if e[0]&0x40 != 0 {
					lfn = nil
				}
				var part []uint16
				for _, r := range [][2]int{{1, 11}, {14, 26}, {28, 32}} {
					for k := r[0]; k < r[1]; k += 2 {
						part = append(part, binary.LittleEndian.Uint16(e[k:]))
					}
				}
				lfn = append(part, lfn...)
				continue
			}
			long := ""
			if lfn != nil {
				u := lfn
				for k, ch := range u {
					if ch == 0 {
						u = u[:k]
						break
					}
				}
				long = string(utf16.Decode(u))
			}
			lfn = nil
			short := strings.TrimRight(string(e[0:8]), " ")
			if ext := strings.TrimRight(string(e[8:11]), " "); ext != "" {
				short += "." + ext
			}
			if strings.EqualFold(long, name) || strings.EqualFold(short, name) {
				cl := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
				return g.clusterOff(c) + int64(o), cl, nil
			}
		}
	}
	return -1, 0, nil
}

// fixDotDot points the ".." entry of a directory made in the root at
// cluster 0, as the FAT specification wants.
func (g fatGeom) fixDotDot(dev Device, name string) error {
	_, c, err := g.lookup(dev, name)
	if err != nil {
		return err
	}
	dotdot := g.clusterOff(c) + 32
	var e [32]byte
	if _, err := dev.ReadAt(e[:], dotdot); err != nil {
		return err
	}
	if string(e[0:2]) != ".." {
		return fmt.Errorf("%s: second entry is not \"..\"", name)
	}
	var zero [2]byte
	if _, err := dev.WriteAt(zero[:], dotdot+20); err != nil {
		return err
	}
	_, err = dev.WriteAt(zero[:], dotdot+26)
	return err
}

func (g fatGeom) readFile(dev Device, name string) ([]byte, error) {
	off, first, err := g.lookup(dev, name)
	if err != nil {
		return nil, err
	}
	var e [32]byte
	if _, err := dev.ReadAt(e[:], off); err != nil {
		return nil, err
	}
	if e[11]&0x10 != 0 {
		return nil, fmt.Errorf("%s is a directory", name)
	}
	size := int64(binary.LittleEndian.Uint32(e[28:]))
	clusters, err := g.chain(dev, first)
	if err != nil {
		return nil, err
	}
	if int64(len(clusters))*g.clusterBytes() < size {
		return nil, fmt.Errorf("%s: %d bytes in %d clusters: the FAT chain is short", name, size, len(clusters))
	}
	out := make([]byte, size)
	for i, c := range clusters {
		lo := int64(i) * g.clusterBytes()
		if lo >= size {
			break
		}
		hi := min(lo+g.clusterBytes(), size)
		if _, err := dev.ReadAt(out[lo:hi], g.clusterOff(c)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fixFSInfo recounts the free clusters into the FSInfo sector. go-diskfs
// does not maintain it, and a count another tool wrote (mkfs.vfat) goes
// stale as soon as go-diskfs allocates.
func (g fatGeom) fixFSInfo(dev Device) error {
	var bs [512]byte
	if _, err := dev.ReadAt(bs[:], g.start); err != nil {
		return err
	}
	infoSec := int64(binary.LittleEndian.Uint16(bs[48:]))
	total := int64(binary.LittleEndian.Uint32(bs[32:]))
	if infoSec == 0 || infoSec == 0xFFFF || total == 0 {
		return nil
	}
	clusters := (total - g.rsvd - g.nfats*g.fatSz) / g.spc
	fat := make([]byte, (clusters+2)*4)
	if _, err := dev.ReadAt(fat, g.entryOff(0, 0)); err != nil {
		return err
	}
	free, next := uint32(0), uint32(0xFFFFFFFF)
	for c := int64(2); c < clusters+2; c++ {
		if binary.LittleEndian.Uint32(fat[c*4:])&0x0FFFFFFF == 0 {
			free++
			if next == 0xFFFFFFFF {
				next = uint32(c)
			}
		}
	}
	var info [512]byte
	off := g.start + infoSec*g.bps
	if _, err := dev.ReadAt(info[:], off); err != nil {
		return err
	}
	if binary.LittleEndian.Uint32(info[0:]) != 0x41615252 || binary.LittleEndian.Uint32(info[484:]) != 0x61417272 {
		return nil // no valid FSInfo sector: nothing to keep right
	}
	binary.LittleEndian.PutUint32(info[488:], free)
	binary.LittleEndian.PutUint32(info[492:], next)
	_, err := dev.WriteAt(info[:], off)
	return err
}

// reachable marks every cluster a directory entry reaches, walking the
// tree from the root: each directory's chain, each file's chain.
func (g fatGeom) reachable(dev Device, dir uint32, seen map[uint32]bool) error {
	clusters, err := g.chain(dev, dir)
	if err != nil {
		return err
	}
	for _, c := range clusters {
		if seen[c] {
			return fmt.Errorf("FAT cluster %d is reached twice", c)
		}
		seen[c] = true
	}
	buf := make([]byte, g.clusterBytes())
	for _, c := range clusters {
		if _, err := dev.ReadAt(buf, g.clusterOff(c)); err != nil {
			return err
		}
		for o := 0; o+32 <= len(buf); o += 32 {
			e := buf[o : o+32]
			switch {
			case e[0] == 0:
				return nil // the end of the directory
			case e[0] == 0xE5, e[11] == 0x0F, e[11]&0x08 != 0:
				continue // deleted, a long-name part, the volume label
			case e[0] == '.' && (e[1] == ' ' || e[1] == '.'):
				continue // "." and "..": the directory itself and its parent
			}
			first := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
			if first < 2 {
				continue // an empty file
			}
			if e[11]&0x10 != 0 {
				if err := g.reachable(dev, first, seen); err != nil {
					return err
				}
				continue
			}
			fc, err := g.chain(dev, first)
			if err != nil {
				return err
			}
			for _, c := range fc {
				if seen[c] {
					return fmt.Errorf("FAT cluster %d is reached twice", c)
				}
				seen[c] = true
			}
		}
	}
	return nil
}

// reclaim frees the clusters the first FAT marks used that no directory
// entry reaches, as fsck.fat -a does: a crash between allocating a file's
// clusters and writing its entry, or between removing an entry and
// freeing its clusters, leaves them. It frees nothing when the tree cannot
// be walked cleanly (a loop, a cluster reached twice): then freeing could
// take a live file's clusters, and leaking is the safe side.
func (g fatGeom) reclaim(dev Device) (int, error) {
	var bs [512]byte
	if _, err := dev.ReadAt(bs[:], g.start); err != nil {
		return 0, err
	}
	total := int64(binary.LittleEndian.Uint32(bs[32:]))
	clusters := (total - g.rsvd - g.nfats*g.fatSz) / g.spc
	if clusters <= 0 || (clusters+2)*4 > g.fatSz*g.bps {
		return 0, nil
	}
	seen := map[uint32]bool{}
	if err := g.reachable(dev, g.root, seen); err != nil {
		return 0, nil //nolint:nilerr // see above: leave the leak
	}
	fat := make([]byte, (clusters+2)*4)
	if _, err := dev.ReadAt(fat, g.entryOff(0, 0)); err != nil {
		return 0, err
	}
	var orphans []uint32
	for c := uint32(2); int64(c) < clusters+2; c++ {
		v := binary.LittleEndian.Uint32(fat[c*4:]) & 0x0FFFFFFF
		if v != 0 && v != 0x0FFFFFF7 && !seen[c] { // 0x0FFFFFF7 marks a bad cluster
			orphans = append(orphans, c)
		}
	}
	if len(orphans) == 0 {
		return 0, nil
	}
	return len(orphans), g.free(dev, orphans)
}
