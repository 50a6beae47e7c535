package builder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
)

// errExt4 says the filesystem mkfs.ext4 made is not laid out as
// normalizeTimes expects; the build stops rather than guess.
var errExt4 = errors.New("unexpected ext4 layout")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32cRaw is e2fsprogs' ext2fs_crc32c_le: CRC-32C without the pre- and
// post-inversion Go's crc32.Update applies.
func crc32cRaw(crc uint32, p []byte) uint32 { return ^crc32.Update(^crc, castagnoli, p) }

// Offsets in the superblock, a group descriptor and an inode (ext4 on-disk
// format, Documentation/filesystems/ext4 in the kernel).
const (
	sbInodesCount    = 0x00
	sbFirstDataBlock = 0x14
	sbLogBlockSize   = 0x18
	sbInodesPerGroup = 0x28
	sbMagic          = 0x38
	sbFirstIno       = 0x54
	sbInodeSize      = 0x58
	sbIncompat       = 0x60
	sbROCompat       = 0x64
	sbUUID           = 0x68
	sbDescSize       = 0xFE
	sbChecksumSeed   = 0x270

	incompat64bit     = 0x80
	incompatCsumSeed  = 0x2000
	roCompatGdtCsum   = 0x10
	roCompatMetaCsum  = 0x400
	bgInodeUninit     = 0x1
	gdInodeBitmapLo   = 0x04
	gdInodeTableLo    = 0x08
	gdFlags           = 0x12
	gdItableUnusedLo  = 0x1C
	gdInodeBitmapHi   = 0x24
	gdInodeTableHi    = 0x28
	gdItableUnusedHi  = 0x32
	inMode            = 0x00
	inAtime           = 0x08
	inCtime           = 0x0C
	inMtime           = 0x10
	inLinks           = 0x1A
	inGeneration      = 0x64
	inChecksumLo      = 0x7C
	inExtraIsize      = 0x80
	inChecksumHi      = 0x82
	inCtimeExtra      = 0x84
	inMtimeExtra      = 0x88
	inAtimeExtra      = 0x8C
	rootIno           = 2
	goodOldInodeSize  = 128
	csumHiExtraEnd    = inChecksumHi + 2 - goodOldInodeSize
	ctimeExtraEnd     = inCtimeExtra + 4 - goodOldInodeSize
	atimeExtraEnd     = inAtimeExtra + 4 - goodOldInodeSize
	maxInodeTableRead = 64 << 20
)

// normalizeTimes sets every in-use inode's access and change times to its
// modification time in the ext4 filesystem in file path, recomputing inode
// checksums. mkfs.ext4 -d (e2fsprogs 1.47) copies each source file's atime
// and ctime into the image, but neither is part of what a tree is: a tree
// unpacked twice, chmod-ed and back, or read on a relatime mount would give
// other bytes (and other chunks) under the same tree digest. The mtime is
// hashed by treeDigest, so after this the image is a function of the digest.
//
// It edits the inode tables in place: a few MiB of reads and writes, where
// a debugfs set_inode_field per inode would take minutes.
func normalizeTimes(path string) (changed int, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return 0, fmt.Errorf("read superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[sbMagic:]) != 0xEF53 {
		return 0, fmt.Errorf("%w: no ext4 superblock in %s", errExt4, path)
	}
	logBS := le.Uint32(sb[sbLogBlockSize:])
	if logBS > 6 {
		return 0, fmt.Errorf("%w: block size 1024<<%d", errExt4, logBS)
	}
	bs := int64(1024) << logBS
	inodes := le.Uint32(sb[sbInodesCount:])
	ipg := le.Uint32(sb[sbInodesPerGroup:])
	isz := int64(le.Uint16(sb[sbInodeSize:]))
	firstIno := le.Uint32(sb[sbFirstIno:])
	incompat := le.Uint32(sb[sbIncompat:])
	roCompat := le.Uint32(sb[sbROCompat:])
	if ipg == 0 || inodes%ipg != 0 || isz < goodOldInodeSize || isz&(isz-1) != 0 || isz > bs {
		return 0, fmt.Errorf("%w: %d inodes, %d per group, %d bytes each", errExt4, inodes, ipg, isz)
	}
	if int64(ipg)*isz > maxInodeTableRead {
		return 0, fmt.Errorf("%w: an inode table of %d bytes", errExt4, int64(ipg)*isz)
	}
	descSize := int64(32)
	if incompat&incompat64bit != 0 {
		descSize = int64(le.Uint16(sb[sbDescSize:]))
		if descSize < 64 || descSize > bs {
			return 0, fmt.Errorf("%w: group descriptors of %d bytes", errExt4, descSize)
		}
	}
	csum := roCompat&roCompatMetaCsum != 0
	var seed uint32
	if incompat&incompatCsumSeed != 0 {
		seed = le.Uint32(sb[sbChecksumSeed:])
	} else {
		seed = crc32cRaw(^uint32(0), sb[sbUUID:sbUUID+16])
	}
	groups := int64(inodes / ipg)
	gdt := make([]byte, groups*descSize)
	gdtOff := (int64(le.Uint32(sb[sbFirstDataBlock:])) + 1) * bs
	if _, err := f.ReadAt(gdt, gdtOff); err != nil {
		return 0, fmt.Errorf("read group descriptors: %w", err)
	}
	table := make([]byte, int64(ipg)*isz)
	bitmap := make([]byte, (ipg+7)/8)
	for g := range groups {
		d := gdt[g*descSize : (g+1)*descSize]
		if le.Uint16(d[gdFlags:])&bgInodeUninit != 0 {
			continue
		}
		itab := int64(le.Uint32(d[gdInodeTableLo:]))
		ibmp := int64(le.Uint32(d[gdInodeBitmapLo:]))
		unused := int64(le.Uint16(d[gdItableUnusedLo:]))
		if descSize >= 64 {
			itab |= int64(le.Uint32(d[gdInodeTableHi:])) << 32
			ibmp |= int64(le.Uint32(d[gdInodeBitmapHi:])) << 32
			unused |= int64(le.Uint16(d[gdItableUnusedHi:])) << 16
		}
		used := int64(ipg)
		if roCompat&(roCompatGdtCsum|roCompatMetaCsum) != 0 {
			used -= unused
		}
		if used <= 0 {
			continue
		}
		if _, err := f.ReadAt(bitmap, ibmp*bs); err != nil {
			return 0, fmt.Errorf("read inode bitmap of group %d: %w", g, err)
		}
		t := table[:used*isz]
		if _, err := f.ReadAt(t, itab*bs); err != nil {
			return 0, fmt.Errorf("read inode table of group %d: %w", g, err)
		}
		dirty := false
		for k := range used {
			ino := uint32(g)*ipg + uint32(k) + 1
			if bitmap[k/8]&(1<<(k%8)) == 0 || (ino != rootIno && ino < firstIno) {
				continue
			}
			in := t[k*isz : (k+1)*isz]
			if le.Uint16(in[inMode:]) == 0 || le.Uint16(in[inLinks:]) == 0 {
				continue
			}
			extra := int64(0)
			if isz > goodOldInodeSize {
				extra = int64(le.Uint16(in[inExtraIsize:]))
			}
			if csum {
				if want, got := inodeCsum(in, ino, seed, extra), storedCsum(in, extra); want != got {
					// A checksum not computed as e2fsprogs does would
					// corrupt every inode written back.
					return 0, fmt.Errorf("%w: inode %d checksum %#x, computed %#x", errExt4, ino, got, want)
				}
			}
			before := string(in)
			mtime := le.Uint32(in[inMtime:])
			le.PutUint32(in[inAtime:], mtime)
			le.PutUint32(in[inCtime:], mtime)
			var mx uint32
			if extra >= int64(inMtimeExtra+4-goodOldInodeSize) {
				mx = le.Uint32(in[inMtimeExtra:])
			}
			if extra >= ctimeExtraEnd {
				le.PutUint32(in[inCtimeExtra:], mx)
			}
			if extra >= atimeExtraEnd {
				le.PutUint32(in[inAtimeExtra:], mx)
			}
			if csum {
				c := inodeCsum(in, ino, seed, extra)
				le.PutUint16(in[inChecksumLo:], uint16(c))
				if extra >= csumHiExtraEnd {
					le.PutUint16(in[inChecksumHi:], uint16(c>>16))
				}
			}
			if string(in) != before {
				dirty = true
				changed++
			}
		}
		if dirty {
			if _, err := f.WriteAt(t, itab*bs); err != nil {
				return changed, fmt.Errorf("write inode table of group %d: %w", g, err)
			}
		}
	}
	return changed, nil
}

// storedCsum is the inode's checksum as stored (lo, and hi where present).
func storedCsum(in []byte, extra int64) uint32 {
	c := uint32(binary.LittleEndian.Uint16(in[inChecksumLo:]))
	if extra >= csumHiExtraEnd {
		c |= uint32(binary.LittleEndian.Uint16(in[inChecksumHi:])) << 16
	}
	return c
}

// inodeCsum is e2fsprogs' ext2fs_inode_csum: CRC-32C of the inode number,
// the generation and the whole inode with its checksum fields zeroed.
func inodeCsum(in []byte, ino, seed uint32, extra int64) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], ino)
	c := crc32cRaw(seed, b[:])
	c = crc32cRaw(c, in[inGeneration:inGeneration+4])
	lo := [2]byte{in[inChecksumLo], in[inChecksumLo+1]}
	hi := [2]byte{in[inChecksumHi], in[inChecksumHi+1]}
	hasHi := extra >= csumHiExtraEnd
	in[inChecksumLo], in[inChecksumLo+1] = 0, 0
	if hasHi {
		in[inChecksumHi], in[inChecksumHi+1] = 0, 0
	}
	c = crc32cRaw(c, in)
	in[inChecksumLo], in[inChecksumLo+1] = lo[0], lo[1]
	if hasHi {
		in[inChecksumHi], in[inChecksumHi+1] = hi[0], hi[1]
	} else {
		c &= 0xFFFF
	}
	return c
}
