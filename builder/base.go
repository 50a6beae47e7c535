package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
)

// BaseExtension is the manifest extension a --base build records its base
// in. It is informative (which version the filesystem was grown from),
// not identity-critical: a reader may skip it.
const BaseExtension = "imprint.base"

// BaseInfo is the value of the BaseExtension.
type BaseInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	ID      string `json:"id"`
}

// base is the resolved --base version.
type base struct {
	info     BaseInfo
	manifest *image.Manifest
}

// resolveBase reads the --base NAME[:VERSION] manifest from the build's
// store (no version: the newest there).
func resolveBase(ctx context.Context, o Options) (*base, error) {
	name, version, _ := strings.Cut(o.Base, ":")
	if err := image.ValidName(name); err != nil {
		return nil, fmt.Errorf("%w: --base %q: want NAME:VERSION of an image in the store: %v", ErrInput, o.Base, err)
	}
	if version == "" {
		idx, err := o.Store.Index(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: --base %s: %w", ErrInput, o.Base, err)
		}
		e, ok := idx.Latest(name)
		if !ok {
			return nil, fmt.Errorf("%w: --base %s: the store %s has no image %q", ErrInput, o.Base, o.Store, name)
		}
		version = e.Version
	}
	raw, err := o.Store.Manifest(ctx, name, version)
	if err != nil {
		return nil, fmt.Errorf("%w: --base %s: %w", ErrInput, o.Base, err)
	}
	m, err := image.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--base %s: %w", o.Base, err)
	}
	return &base{info: BaseInfo{Name: name, Version: version, ID: image.ID(raw)}, manifest: m}, nil
}

func (b *base) extension() (json.RawMessage, error) {
	return json.Marshal(b.info)
}

// buildOnBase makes the root filesystem by updating a copy of the base
// version's root filesystem to the tree, in place: the copy is
// loop-mounted noatime, rsync'ed from the tree (--delete, hard links, ACLs,
// xattrs, contents compared by checksum) and checked with e2fsck. Blocks
// the tree did not change stay where they were, so only the chunks around
// what changed differ from the base (docs/chunk-size.md, method b).
// A fresh mkfs.ext4 -d lays every file out again and moves ~90 % of them.
// The result depends on the base and on the build (the kernel's block
// allocation, the journal, the superblock's mount times), so it is not a
// function of the tree alone.
func buildOnBase(ctx context.Context, o Options, b *base, rootName, tmp string) (source, string, time.Time, error) {
	bp, ok := b.manifest.Partition(rootName)
	if !ok || bp.Content == nil {
		return source{}, "", time.Time{}, fmt.Errorf("%w: --base %s:%s has no partition %q to build on (it has %s)", ErrInput, b.info.Name, b.info.Version, rootName, partitionNames(b.manifest))
	}
	for _, tool := range []string{"mount", "umount", "rsync", "e2fsck", "resize2fs"} {
		if _, err := lookTool(tool); err != nil {
			return source{}, "", time.Time{}, fmt.Errorf("--base needs %s: %w", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		return source{}, "", time.Time{}, fmt.Errorf("%w: --base loop-mounts the base filesystem and needs root", ErrInput)
	}
	tr, err := scanTree(ctx, o.Rootfs)
	if err != nil {
		return source{}, "", time.Time{}, err
	}
	digest, newest := tr.digest, tr.newest
	out := filepath.Join(tmp, "root.ext4")
	if err := extractContent(ctx, o, b.manifest, bp.Content, out); err != nil {
		return source{}, "", time.Time{}, fmt.Errorf("--base %s:%s: %w", b.info.Name, b.info.Version, err)
	}
	fake := strconv.FormatInt(newest.Unix(), 10)
	// The base must be clean before it is grown or mounted.
	if err := fsck(ctx, out, fake); err != nil {
		return source{}, "", time.Time{}, fmt.Errorf("--base %s:%s: %w", b.info.Name, b.info.Version, err)
	}
	size := bp.Content.Size
	// Grown, never shrunk: shrinking moves blocks. A tree that no longer
	// fits (its data and a block per entry, plus an eighth) gets the size a
	// fresh build would give it.
	want := o.RootSize
	if need := tr.size + tr.size/8 + int64(tr.files)*4096; need > size {
		want = max(want, tr.freshSize())
	}
	if want > size {
		if size, err = grow(ctx, out, want, fake); err != nil {
			return source{}, "", time.Time{}, err
		}
	}
	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return source{}, "", time.Time{}, err
	}
	for try := 0; ; try++ {
		err := syncTree(ctx, o.Rootfs, out, mnt)
		if err == nil {
			break
		}
		if !errors.Is(err, errFull) || try == 3 || o.RootSize != 0 {
			return source{}, "", time.Time{}, err
		}
		if err := fsck(ctx, out, fake); err != nil {
			return source{}, "", time.Time{}, err
		}
		if size, err = grow(ctx, out, size*3/2, fake); err != nil {
			return source{}, "", time.Time{}, err
		}
	}
	// The kernel stamped the inodes rsync touched with the wall clock;
	// as in a fresh build, access and change times are the mtime.
	if _, err := normalizeTimes(out); err != nil {
		return source{}, "", time.Time{}, fmt.Errorf("the updated root filesystem: %w", err)
	}
	if err := fsck(ctx, out, fake); err != nil {
		return source{}, "", time.Time{}, fmt.Errorf("the updated root filesystem: %w", err)
	}
	f, err := os.Open(out)
	if err != nil {
		return source{}, "", time.Time{}, err
	}
	return source{label: "root filesystem (on " + b.info.Name + ":" + b.info.Version + ")", r: f, size: size}, digest, newest, nil
}

func partitionNames(m *image.Manifest) string {
	var n []string
	for _, p := range m.Partitions {
		n = append(n, strconv.Quote(p.Name))
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func runTool(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	p, err := lookTool(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

// extractContent writes a content out of the store into a sparse file,
// each chunk checked against its name.
func extractContent(ctx context.Context, o Options, m *image.Manifest, c *image.Content, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(c.Size); err != nil {
		return err
	}
	dec, err := image.NewDecoder()
	if err != nil {
		return err
	}
	defer dec.Close()
	var stored []byte
	buf := make([]byte, m.ChunkSize)
	for i, sum := range c.Chunks {
		if sum == image.ZeroChunk {
			continue
		}
		if stored, err = o.Store.ReadChunk(ctx, sum, stored); err != nil {
			return err
		}
		data, err := dec.Decode(stored, sum, c.ChunkLen(i, m.ChunkSize), buf)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(data, int64(i)*m.ChunkSize); err != nil {
			return err
		}
		if o.Progress != nil {
			o.Progress("base root filesystem", int64(i+1)*m.ChunkSize, c.Size)
		}
	}
	return f.Close()
}

// fsck runs e2fsck -fy: 0 (clean) and 1 (fixed) are fine, anything else
// is a filesystem imprint will not ship.
func fsck(ctx context.Context, file, fakeTime string) error {
	b, err := runTool(ctx, []string{"E2FSPROGS_FAKE_TIME=" + fakeTime}, "e2fsck", "-fy", file)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("e2fsck -fy: %w: %s", err, b)
	}
	return nil
}

// grow makes the filesystem in file size bytes (rounded up to 1 MiB).
func grow(ctx context.Context, file string, size int64, fakeTime string) (int64, error) {
	size = (size + layout.Align - 1) / layout.Align * layout.Align
	if err := os.Truncate(file, size); err != nil {
		return 0, err
	}
	if b, err := runTool(ctx, []string{"E2FSPROGS_FAKE_TIME=" + fakeTime}, "resize2fs", file); err != nil {
		return 0, fmt.Errorf("resize2fs to %s: %w: %s", layout.HumanSize(size), err, b)
	}
	return size, nil
}

// errFull says the tree did not fit the filesystem.
var errFull = errors.New("the root filesystem is full")

// syncTree mounts file on mnt (noatime: reading must not write inodes),
// makes it equal to tree and unmounts it.
func syncTree(ctx context.Context, tree, file, mnt string) (err error) {
	if b, err := runTool(ctx, nil, "mount", "-t", "ext4", "-o", "loop,noatime", file, mnt); err != nil {
		return fmt.Errorf("mount %s: %w: %s", file, err, b)
	}
	mounted := true
	defer func() {
		if !mounted {
			return
		}
		// Unmount even when ctx is done: a mount left behind holds the
		// loop device and the temporary directory.
		if b, uerr := runTool(context.Background(), nil, "umount", mnt); uerr != nil && err == nil {
			err = fmt.Errorf("umount %s: %w: %s", mnt, uerr, b)
		}
	}()
	// --checksum: a file whose size and mtime match may still differ.
	// /lost+found belongs to the filesystem, not the tree.
	b, rerr := runTool(ctx, nil, "rsync", "-aHAX", "--checksum", "--delete", "--numeric-ids", "--exclude=/lost+found",
		strings.TrimSuffix(tree, "/")+"/", mnt+"/")
	if rerr != nil {
		var sfs syscall.Statfs_t
		if syscall.Statfs(mnt, &sfs) == nil && (sfs.Bavail < sfs.Blocks/50 || sfs.Ffree < sfs.Files/50) {
			return fmt.Errorf("%w: rsync: %v", errFull, rerr)
		}
		return fmt.Errorf("rsync %s into the base filesystem: %w: %s", tree, rerr, lastLines(b, 5))
	}
	mounted = false
	if b, err := runTool(context.Background(), nil, "umount", mnt); err != nil {
		return fmt.Errorf("umount %s: %w: %s", mnt, err, b)
	}
	return nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
