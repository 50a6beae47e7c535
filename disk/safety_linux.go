package disk

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// CheckTarget refuses a deploy target that something on this machine is
// using: a block device that is (or has partitions that are) mounted, swap,
// held by device-mapper/md, or read-only; an image file attached to a loop
// device. A path that does not exist passes, because deploy creates it.
// Each refusal wraps ErrMounted, ErrRunningRoot, ErrSwap, ErrHeld,
// ErrReadOnly or ErrNotTarget.
func CheckTarget(path string) error {
	return sysView{proc: "/proc", sys: "/sys"}.checkTarget(path)
}

// sysView reads the kernel's view of devices from proc and sys roots, so
// tests can point it at fake trees.
type sysView struct{ proc, sys string }

type devNum struct{ major, minor uint64 }

func (d devNum) String() string { return fmt.Sprintf("%d:%d", d.major, d.minor) }

// splitDev decodes a Linux dev_t; syscall has no helper for it and this
// keeps the package free of an x/sys dependency for two shifts.
func splitDev(rdev uint64) devNum {
	return devNum{
		major: (rdev>>8)&0xfff | (rdev>>32)&^uint64(0xfff),
		minor: rdev&0xff | (rdev>>12)&^uint64(0xff),
	}
}

func parseDevNum(s string) (devNum, bool) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return devNum{}, false
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return devNum{}, false
	}
	return devNum{ma, mi}, true
}

// blockDev is one kernel block device: the target or one of its partitions.
type blockDev struct {
	name string // sysfs name ("sda1"); empty when sysfs does not know it
	dev  devNum
	part bool // a partition of the target rather than the target itself
}

func (b blockDev) path() string { return "/dev/" + b.name }

// problem is one reason to refuse, ranked so the most serious is reported
// when a device has several.
type problem struct {
	err  error
	why  string
	rank int
}

const (
	rankRoot = iota
	rankMounted
	rankSwap
	rankHeld
	rankReadOnly
)

func (v sysView) checkTarget(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking target %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("checking target %s: no stat data", path)
	}
	mode := fi.Mode()
	switch {
	case mode.IsRegular():
		return v.checkFile(path, st)
	case mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0:
		return v.checkBlock(path, splitDev(st.Rdev))
	}
	return fmt.Errorf("%w: %s is %s", ErrNotTarget, path, fileKind(mode))
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}

func (v sysView) checkBlock(path string, dev devNum) error {
	devs, err := v.blockFamily(dev)
	if err != nil {
		return fmt.Errorf("checking target %s: %w", path, err)
	}
	p, err := v.blockProblem(devs, true)
	if err != nil {
		return fmt.Errorf("checking target %s: %w", path, err)
	}
	if p != nil {
		return fmt.Errorf("%w: %s: %s", p.err, path, p.why)
	}
	// Mounts in other mount namespaces, btrfs member devices and programs
	// holding the device exclusively leave no trace above, but the kernel
	// refuses them an exclusive open. Other open errors are the caller's to
	// meet when it opens the device for real.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_EXCL, 0)
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("%w: %s: the kernel reports it busy (mounted in another mount namespace, part of a multi-device filesystem, or opened exclusively by another program)", ErrHeld, path)
	}
	if err == nil {
		f.Close()
	}
	return nil
}

func (v sysView) checkFile(path string, st *syscall.Stat_t) error {
	same := func(name string) bool {
		var o syscall.Stat_t
		return syscall.Stat(name, &o) == nil && o.Dev == st.Dev && o.Ino == st.Ino
	}
	swaps, err := v.swaps()
	if err != nil {
		return fmt.Errorf("checking target %s: %w", path, err)
	}
	for _, s := range swaps {
		if same(s) {
			return fmt.Errorf("%w: %s is in use as a swap file; swapoff it first", ErrSwap, path)
		}
	}
	loops, err := v.loopsBackedBy(same)
	if err != nil {
		return fmt.Errorf("checking target %s: %w", path, err)
	}
	if len(loops) == 0 {
		return nil
	}
	var worst *problem
	var worstLoop string
	for _, l := range loops {
		devs, err := v.blockFamily(l)
		if err != nil {
			return fmt.Errorf("checking target %s: %w", path, err)
		}
		// A read-only loop device still pins the file; it is reported as
		// attached, below.
		p, err := v.blockProblem(devs, false)
		if err != nil {
			return fmt.Errorf("checking target %s: %w", path, err)
		}
		if p != nil && (worst == nil || p.rank < worst.rank) {
			worst, worstLoop = p, devs[0].path()
		}
	}
	if worst != nil {
		return fmt.Errorf("%w: %s is attached to %s, and %s", worst.err, path, worstLoop, worst.why)
	}
	var names []string
	for _, l := range loops {
		if b, ok, _ := v.blockByDev(l); ok {
			names = append(names, b.path())
		} else {
			names = append(names, "loop device "+l.String())
		}
	}
	return fmt.Errorf("%w: %s is attached to %s; detach it with losetup -d %s", ErrHeld, path, strings.Join(names, ", "), strings.Join(names, " "))
}

// loopsBackedBy lists the loop devices whose backing file is the target.
// backing_file holds a path as the attaching process saw it, possibly with
// " (deleted)", so the file is compared by device and inode, not by name.
func (v sysView) loopsBackedBy(same func(string) bool) ([]devNum, error) {
	ents, err := os.ReadDir(filepath.Join(v.sys, "block"))
	if err != nil {
		return nil, fmt.Errorf("listing loop devices: %w", err)
	}
	var out []devNum
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		dir := filepath.Join(v.sys, "block", e.Name())
		b, err := os.ReadFile(filepath.Join(dir, "loop", "backing_file"))
		if err != nil {
			continue // not attached
		}
		if !same(strings.TrimSuffix(string(b), "\n")) {
			continue
		}
		d, err := os.ReadFile(filepath.Join(dir, "dev"))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", e.Name(), err)
		}
		n, ok := parseDevNum(string(d))
		if !ok {
			return nil, fmt.Errorf("%s: bad dev %q", e.Name(), strings.TrimSpace(string(d)))
		}
		out = append(out, n)
	}
	return out, nil
}

// blockFamily gives the device with dev and its partitions; the device comes
// first. A device sysfs does not list is still checked by number alone.
func (v sysView) blockFamily(dev devNum) ([]blockDev, error) {
	self, ok, err := v.blockByDev(dev)
	if err != nil {
		return nil, err
	}
	if !ok {
		return []blockDev{{dev: dev}}, nil
	}
	devs := []blockDev{self}
	dir := filepath.Join(v.sys, "class", "block", self.name)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing partitions of %s: %w", self.name, err)
	}
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "dev"))
		if err != nil {
			return nil, fmt.Errorf("reading partition %s: %w", e.Name(), err)
		}
		n, ok := parseDevNum(string(b))
		if !ok {
			return nil, fmt.Errorf("partition %s: bad dev %q", e.Name(), strings.TrimSpace(string(b)))
		}
		devs = append(devs, blockDev{name: e.Name(), dev: n, part: true})
	}
	return devs, nil
}

func (v sysView) blockByDev(dev devNum) (blockDev, bool, error) {
	root := filepath.Join(v.sys, "class", "block")
	ents, err := os.ReadDir(root)
	if err != nil {
		return blockDev{}, false, fmt.Errorf("listing block devices: %w", err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(root, e.Name(), "dev"))
		if err != nil {
			continue
		}
		if n, ok := parseDevNum(string(b)); ok && n == dev {
			return blockDev{name: e.Name(), dev: dev}, true, nil
		}
	}
	return blockDev{}, false, nil
}

// blockProblem finds the most serious use of devs (a device and its
// partitions).
func (v sysView) blockProblem(devs []blockDev, checkRO bool) (*problem, error) {
	label := func(b blockDev) string {
		switch {
		case b.name == "":
			return "device " + b.dev.String()
		case b.part:
			return b.path() + " (a partition of it)"
		}
		return b.path()
	}
	// match finds the device a mount or swap entry is on: by number when
	// the entry has one (hasDev), else, or also, by its /dev path.
	match := func(dev devNum, hasDev bool, devPath string) (blockDev, bool) {
		for _, b := range devs {
			if hasDev && b.dev == dev {
				return b, true
			}
		}
		// btrfs and other filesystems report an anonymous device number;
		// their mount source still names the device.
		if base, ok := strings.CutPrefix(devPath, "/dev/"); ok {
			for _, b := range devs {
				if b.name != "" && b.name == base {
					return b, true
				}
			}
		}
		return blockDev{}, false
	}

	mounts, err := v.mounts()
	if err != nil {
		return nil, err
	}
	var mounted []string
	seen := map[string]bool{}
	for _, m := range mounts {
		b, ok := match(m.dev, true, m.source)
		if !ok {
			continue
		}
		if m.point == "/" {
			return &problem{ErrRunningRoot, label(b) + " is mounted on / (the running system)", rankRoot}, nil
		}
		s := label(b) + " is mounted on " + m.point
		if !seen[s] {
			seen[s] = true
			mounted = append(mounted, s)
		}
	}
	if len(mounted) > 0 {
		return &problem{ErrMounted, strings.Join(mounted, "; ") + "; unmount first", rankMounted}, nil
	}

	swaps, err := v.swaps()
	if err != nil {
		return nil, err
	}
	for _, s := range swaps {
		var st syscall.Stat_t
		isBlock := syscall.Stat(s, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFBLK
		if b, ok := match(splitDev(st.Rdev), isBlock, s); ok {
			return &problem{ErrSwap, label(b) + " is in use as swap; swapoff it first", rankSwap}, nil
		}
	}

	for _, b := range devs {
		if b.name == "" {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(v.sys, "class", "block", b.name, "holders"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading holders of %s: %w", b.name, err)
		}
		if len(ents) > 0 {
			var hs []string
			for _, e := range ents {
				hs = append(hs, e.Name())
			}
			sort.Strings(hs)
			return &problem{ErrHeld, fmt.Sprintf("%s is held by %s (device-mapper, RAID or LVM built on it); stop that first", label(b), strings.Join(hs, ", ")), rankHeld}, nil
		}
	}

	if checkRO && devs[0].name != "" {
		b, err := os.ReadFile(filepath.Join(v.sys, "class", "block", devs[0].name, "ro"))
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			return &problem{ErrReadOnly, label(devs[0]) + " is read-only (a write-protect switch, or blockdev --setro)", rankReadOnly}, nil
		}
	}
	return nil, nil
}

type mountEntry struct {
	dev    devNum
	point  string
	source string
}

// mounts reads this process's mount table. Failing to read it fails the
// check: a target that cannot be checked is not a safe target.
func (v sysView) mounts() ([]mountEntry, error) {
	f, err := os.Open(filepath.Join(v.proc, "self", "mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [tags...] - fstype source superopts
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		dev, ok := parseDevNum(f[2])
		if !ok {
			continue
		}
		m := mountEntry{dev: dev, point: unescapeOctal(f[4])}
		for i := 5; i+2 < len(f); i++ {
			if f[i] == "-" {
				m.source = unescapeOctal(f[i+2])
				break
			}
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	return out, nil
}

// swaps lists the active swap areas by path. A kernel without swap support
// has no /proc/swaps, which means none are in use.
func (v sysView) swaps() ([]string, error) {
	b, err := os.ReadFile(filepath.Join(v.proc, "swaps"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the swap list: %w", err)
	}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 { // header: Filename Type Size Used Priority
			continue
		}
		out = append(out, strings.TrimSuffix(unescapeOctal(f[0]), " (deleted)"))
	}
	return out, nil
}

// unescapeOctal undoes the kernel's \ooo escaping of spaces, tabs, newlines
// and backslashes in paths in /proc.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
