package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// tree is what a build knows of --rootfs before it makes a filesystem.
type tree struct {
	digest string
	// newest is the time the filesystem's entries get: the tree's newest
	// mtime, or SOURCE_DATE_EPOCH when that is set.
	newest time.Time
	size   int64
	files  int
}

// scanTree reads the tree at root once, for both a fresh build and one on
// a base.
func scanTree(ctx context.Context, root string) (tree, error) {
	digest, newest, size, files, err := treeDigest(ctx, root)
	if err != nil {
		return tree{}, fmt.Errorf("read --rootfs %s: %w", root, err)
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err == nil {
			newest = time.Unix(sec, 0)
		}
	}
	return tree{digest: digest, newest: newest, size: size, files: files}, nil
}

// freshSize is the filesystem size a build from nothing gives the tree:
// its data plus a quarter, an inode and a block per file, the journal.
func (t tree) freshSize() int64 {
	return t.size + t.size/4 + int64(t.files)*(4096+256) + 24<<20
}

// treeDigest hashes everything mkfs.ext4 -d copies from a directory: paths,
// types, modes, owners, sizes, modification times, link targets, device
// numbers and file contents. Two trees with the same digest give the same
// filesystem image: access and change times, which mkfs.ext4 -d also
// copies, are set to the modification time afterwards (normalizeTimes).
// It also returns the newest modification time, which becomes the image's
// creation time.
func treeDigest(ctx context.Context, root string) (digest string, newest time.Time, size int64, files int, err error) {
	h := sha256.New()
	var paths []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return ctx.Err()
	})
	if err != nil {
		return "", time.Time{}, 0, 0, err
	}
	sort.Strings(paths)
	for _, p := range paths {
		st, err := os.Lstat(p)
		if err != nil {
			return "", time.Time{}, 0, 0, err
		}
		sys, _ := st.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(root, p)
		var uid, gid uint32
		var rdev uint64
		if sys != nil {
			uid, gid, rdev = sys.Uid, sys.Gid, uint64(sys.Rdev)
		}
		fmt.Fprintf(h, "%q %o %d %d %d %d %d\n", rel, uint32(st.Mode()), uid, gid, st.Size(), st.ModTime().UnixNano(), rdev)
		if st.ModTime().After(newest) {
			newest = st.ModTime()
		}
		files++
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return "", time.Time{}, 0, 0, err
			}
			fmt.Fprintf(h, "-> %q\n", t)
		case st.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return "", time.Time{}, 0, 0, err
			}
			n, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				return "", time.Time{}, 0, 0, fmt.Errorf("read %s: %w", p, err)
			}
			size += (n + 4095) / 4096 * 4096
		}
	}
	return hex.EncodeToString(h.Sum(nil)), newest, size, files, nil
}

// mke2fsConf pins every default mkfs.ext4 would otherwise take from the
// host's /etc/mke2fs.conf, so the same tree gives the same bytes on any
// machine with the same e2fsprogs.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
	lazy_itable_init = false
	lazy_journal_init = false
[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`

// uuidFrom derives a UUID (version 4 layout) from a seed, so the filesystem
// UUID and directory hash seed are fixed by the input.
func uuidFrom(seed string) string {
	s := sha256.Sum256([]byte(seed))
	s[6] = s[6]&0x0f | 0x40
	s[8] = s[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

// makeExt4 runs mkfs.ext4 -d on a fresh file of size bytes.
func makeExt4(ctx context.Context, rootfs, out string, size int64, digest string, created time.Time, tmpDir string) error {
	conf, err := os.CreateTemp(tmpDir, "imprint-mke2fs-*.conf")
	if err != nil {
		return err
	}
	defer os.Remove(conf.Name())
	if _, err := conf.WriteString(mke2fsConf); err != nil {
		conf.Close()
		return err
	}
	conf.Close()
	if err := os.Remove(out); err != nil && !os.IsNotExist(err) {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-t", "ext4", "-L", "root",
		"-U", uuidFrom("fs-uuid:"+digest),
		"-E", "hash_seed="+uuidFrom("hash-seed:"+digest)+",root_owner=0:0,nodiscard",
		"-d", rootfs, out)
	cmd.Env = append(os.Environ(),
		"MKE2FS_CONFIG="+conf.Name(),
		"E2FSPROGS_FAKE_TIME="+strconv.FormatInt(created.Unix(), 10),
		"MKE2FS_DEVICE_SECTSIZE=512", "MKE2FS_DEVICE_PHYS_SECTSIZE=4096")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 -d %s: %w: %s", rootfs, err, b)
	}
	if _, err := normalizeTimes(out); err != nil {
		return fmt.Errorf("mkfs.ext4 -d %s: normalise inode times: %w", rootfs, err)
	}
	return nil
}
