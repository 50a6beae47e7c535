package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/identity"
	"golang.org/x/sys/unix"
)

// Where the agent keeps its mounts; /run moves into the new root, so they
// stay reachable (and visible in /proc/mounts) after switch root.
const (
	rwDir    = "/run/imprint/rw"
	stateDir = "/run/imprint/state"
	newRoot  = "/newroot"
)

// assemble is the root pipeline both modes share: lower is the read-only
// root, mounted; state is the device of the state partition ("" for
// none). It decides the node's identity, builds the overlay (class and
// node layers over the root, a tmpfs for writes), shows the chosen per-node
// files, makes the writable paths, writes hostname and machine-id into the
// overlay and runs the image's init. Nothing is written to lower.
func (a *Agent) assemble(lower, state, from string, begin time.Time) (err error) {
	t0 := time.Now()
	// The state partition first: it remembers the newest site map this
	// node took, which decides the map, and the map the node's name.
	stateMnt, noState := "", "no state partition"
	if state != "" {
		if err := a.mountState(state, stateDir); err != nil {
			a.say("state partition %s: %v; persistent paths are volatile on this boot", state, err)
			noState = "state partition not mounted"
		} else {
			stateMnt = stateDir
			// A failure below is retried from the start (Main's tries):
			// the partition must not stay mounted, or the next try cannot
			// open it (O_EXCL) and boots without it.
			defer func() {
				if err != nil {
					if uerr := releaseState(newRoot, stateMnt); uerr != nil {
						a.say("state partition %s: unmount after %v: %v", state, err, uerr)
					}
				}
			}()
		}
	}
	a.site = a.chooseSite(stateMnt, noState)
	lowerFS := os.DirFS(lower)
	node := a.nodeName(lowerFS)
	plan := identity.ResolveAtBootWith(lowerFS, a.site, node, a.Params.Class)
	for _, m := range plan.Messages {
		a.say("identity: %s", m)
	}
	for _, d := range []string{rwDir, newRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("tmpfs", rwDir, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("tmpfs for the overlay: %w", err)
	}
	for _, d := range []string{rwDir + "/upper", rwDir + "/work"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// Overlay lower layers are listed top first: the node's layer, the
	// class chain from the most specific, default, then the root. The
	// layers live inside the root, and overlayfs refuses a lower layer
	// inside another ("overlapping lowerdir path"), so they are merged in
	// an overlay of their own first (with an empty directory beside them:
	// an overlay without an upper layer needs two lowers), which then lies
	// over the root as one layer.
	lowers := []string{lower}
	if len(plan.Layers) > 0 {
		var ls []string
		for i := len(plan.Layers) - 1; i >= 0; i-- {
			ls = append(ls, filepath.Join(lower, plan.Layers[i].Dir))
		}
		empty, merged := rwDir+"/empty", "/run/imprint/layers"
		for _, d := range []string{empty, merged} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		ls = append(ls, empty)
		if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(ls, ":")); err != nil {
			return fmt.Errorf("overlay of the class and node layers: %w", err)
		}
		lowers = []string{merged, lower}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", strings.Join(lowers, ":"), rwDir, rwDir)
	if err := unix.Mount("overlay", newRoot, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	if a.Params.RW {
		a.say("the command line asks for rw: the root stays read-only (it must stay the image's bytes); writes go to the overlay")
	}
	for _, f := range plan.Files {
		if err := showVariant(newRoot, f.From, f.Path); err != nil {
			a.say("identity: %s <- %s: %v (the image's own %s stays)", f.Path, f.From, err, f.Path)
		}
	}
	var persisted, copied, volatile []string
	for i, w := range plan.Writable {
		var err error
		switch w.Kind {
		case identity.Persistent:
			if stateMnt == "" {
				volatile = append(volatile, w.Path)
				continue
			}
			err = persist(stateMnt, plan.Node, w.Path)
			persisted = append(persisted, w.Path)
		case identity.Copied:
			err = copyToTmpfs(w.Path, i)
			copied = append(copied, w.Path)
		default:
			volatile = append(volatile, w.Path)
		}
		if err != nil {
			a.say("writable %s %s: %v; it stays volatile", w.Kind, w.Path, err)
		}
	}
	if stateMnt != "" {
		if err := writeUnits(systemdRuntimeUnits, mountUnits(state, stateMnt, plan.Node, persisted)); err != nil {
			a.say("systemd mount units for the persistent paths: %v", err)
		}
	}
	if err := writeGenerated(plan); err != nil {
		a.say("identity: %v", err)
	}
	a.sshHostKeys(stateMnt, plan.Node)
	a.say("identity: node %s class %s (%s): %d files, %d layers; persistent [%s] copied [%s] volatile [%s] and the rest; hostname %s machine-id %s; applied in %v",
		plan.Node, plan.Class, strings.Join(plan.Chain, " -> "), len(plan.Files), len(plan.Layers),
		strings.Join(persisted, " "), strings.Join(copied, " "), strings.Join(volatile, " "),
		plan.Hostname, plan.MachineID, time.Since(t0).Round(time.Millisecond))
	a.say("root from %s mounted read-only under a tmpfs overlay (%v since the agent started); starting /sbin/init", from, time.Since(begin).Round(time.Millisecond))
	return switchRoot(newRoot, "/sbin/init")
}

// sshHostKeys gives the node its own SSH host keys in the overlay's
// /etc/ssh when the image has that directory (sshd installed): kept on the
// state partition under the node's name, or new at every boot without
// one (diskless). A failure leaves the image's keys and says so; it never
// stops the boot.
func (a *Agent) sshHostKeys(state, node string) {
	etc := filepath.Join(newRoot, "etc/ssh")
	if st, err := os.Stat(etc); err != nil || !st.IsDir() {
		return
	}
	keep := ""
	if state != "" {
		keep = sshKeyDir(state, node)
	}
	t0 := time.Now()
	made, kept, notes, err := hostKeys(etc, keep, node)
	for _, n := range notes {
		a.say("ssh host keys: %s", n)
	}
	if err != nil {
		a.say("ssh host keys: %v; the image's keys (if any) stay", err)
	}
	where := "new at every boot (no state partition)"
	if keep != "" {
		where = "kept on the state partition"
	}
	a.say("ssh host keys: made [%s] kept [%s], %s, in %v", joinTypes(made), joinTypes(kept), where, time.Since(t0).Round(time.Millisecond))
}

// nodeName is imprint.node=, else the DHCP server's host name, else what
// the machine's MACs and DMI say through the image's name lines, else a
// name made from them. A local boot never waits for DHCP for it unless the
// command line says imprint.node=dhcp.
func (a *Agent) nodeName(lowerFS fs.FS) string {
	if n := a.Params.Node; n != "" && n != NodeFromDHCP {
		if err := identity.ValidNode(n); err == nil {
			return n
		} else {
			a.say("imprint.node=: %v; naming the node from the machine", err)
		}
	}
	c, err := a.site, error(nil)
	if c == nil {
		c, err = identity.Load(lowerFS)
	}
	if err != nil {
		c = identity.Default()
	}
	f := machineFacts()
	f.DHCP = a.dhcpHost
	n, how := c.NodeName(f)
	asked := "no imprint.node="
	if a.Params.Node == NodeFromDHCP {
		asked = "imprint.node=dhcp"
	}
	a.say("identity: %s: node %s from %s", asked, n, how)
	return n
}

func machineFacts() identity.Facts {
	var f identity.Facts
	ents, _ := os.ReadDir("/sys/class/net")
	var names []string
	for _, e := range ents {
		if e.Name() != "lo" {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("/sys/class/net", n, "address"))
		mac := strings.ToLower(strings.TrimSpace(string(b)))
		if err == nil && mac != "" && mac != "00:00:00:00:00:00" {
			f.MACs = append(f.MACs, mac)
		}
	}
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	f.Serial = read("/sys/class/dmi/id/product_serial")
	f.UUID = read("/sys/class/dmi/id/product_uuid")
	return f
}

// showVariant puts the variant from at path in the overlay (a copy in the
// tmpfs upper layer; a symlink stays a symlink).
func showVariant(root, from, path string) error {
	src, dst := filepath.Join(root, from), filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return copyEntry(src, dst)
}

// mountState mounts the state partition read-write at dir, making an
// ext4 filesystem on it first when it has none. A partition with another
// filesystem is left alone. One already mounted at dir (an earlier try
// of this boot that did not unmount it) is used as it is.
func (a *Agent) mountState(spec, dir string) error {
	dev := spec
	if g, ok := strings.CutPrefix(spec, "PARTUUID="); ok {
		p, err := findPartition(g, "", false)
		if err != nil {
			return fmt.Errorf("no partition with PARTUUID %s: %w", g, err)
		}
		dev = p.Dev
	}
	if mountedAt(dev, dir) {
		a.say("state partition %s: already mounted at %s, using it", dev, dir)
		return nil
	}
	d, err := disk.OpenDisk(dev, disk.OpenOptions{Write: true})
	if err != nil {
		return err
	}
	sec := disk.Section{D: d, Len: d.Size()}
	sig, err := disk.Signature(sec)
	if err == nil && sig == "" {
		begin := time.Now()
		if err = disk.MakeExt4Go(sec, "state"); err == nil {
			err = d.Sync()
			a.say("state partition %s had no filesystem: made ext4 (%d MiB) in %v", dev, d.Size()>>20, time.Since(begin).Round(time.Millisecond))
		}
	}
	d.Close()
	if err != nil {
		return err
	}
	if sig != "" && sig != "ext4" {
		return fmt.Errorf("it holds %s, not ext4; imprint does not format over it", sig)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, dir, "ext4", unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount %s (ext4): %w", dev, err)
	}
	return nil
}

// mountedAt says whether block device dev is mounted at dir: dir is the
// root of a filesystem (its device differs from its parent's) on dev.
func mountedAt(dev, dir string) bool {
	var d, parent, b unix.Stat_t
	if unix.Stat(dev, &b) != nil || b.Mode&unix.S_IFMT != unix.S_IFBLK ||
		unix.Stat(dir, &d) != nil || unix.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return d.Dev == b.Rdev && d.Dev != parent.Dev
}

// persist bind-mounts the node's copy of path from the state partition.
// The first time, the copy is seeded from what the image (with its layers
// and variants) has there; after that the node's copy wins.
func persist(state, node, path string) error {
	kept := filepath.Join(state, "nodes", node, path)
	target := filepath.Join(newRoot, path)
	if _, err := os.Lstat(kept); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(kept), 0o755); err != nil {
			return err
		}
		tmp := kept + ".imprint-seed"
		_ = os.RemoveAll(tmp)
		if _, err := os.Lstat(target); err == nil {
			if err := copyEntry(target, tmp); err != nil {
				return fmt.Errorf("seed from the image: %w", err)
			}
		} else if err := os.Mkdir(tmp, 0o755); err != nil {
			return err
		}
		if err := os.Rename(tmp, kept); err != nil {
			return err
		}
	}
	st, err := os.Lstat(kept)
	if err != nil {
		return err
	}
	if err := makeMountPoint(target, st.IsDir()); err != nil {
		return err
	}
	return unix.Mount(kept, target, "", unix.MS_BIND, "")
}

// copyToTmpfs gives path a tmpfs of its own, filled from the image.
func copyToTmpfs(path string, i int) error {
	target := filepath.Join(newRoot, path)
	stage := fmt.Sprintf("/run/imprint/copied/%d", i)
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", stage, "tmpfs", 0, "mode=0755"); err != nil {
		return err
	}
	if st, err := os.Lstat(target); err == nil && st.IsDir() {
		ents, err := os.ReadDir(target)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := copyEntry(filepath.Join(target, e.Name()), filepath.Join(stage, e.Name())); err != nil {
				return err
			}
		}
		_ = os.Chmod(stage, st.Mode().Perm())
	}
	if err := makeMountPoint(target, true); err != nil {
		return err
	}
	return unix.Mount(stage, target, "", unix.MS_MOVE, "")
}

func makeMountPoint(p string, dir bool) error {
	if _, err := os.Lstat(p); err == nil {
		return nil
	}
	if dir {
		return os.MkdirAll(p, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// writeGenerated writes hostname and machine-id into the overlay and sets
// the kernel's host name (an init that does not read /etc/hostname still
// shows the node's).
func writeGenerated(p *identity.Plan) error {
	var errs []error
	for name, content := range map[string]string{"etc/hostname": p.Hostname + "\n", "etc/machine-id": p.MachineID + "\n"} {
		dst := filepath.Join(newRoot, name)
		_ = os.MkdirAll(filepath.Dir(dst), 0o755)
		_ = os.Remove(dst)
		if err := os.WriteFile(dst, []byte(content), 0o444); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unix.Sethostname([]byte(p.Hostname)); err != nil {
		errs = append(errs, fmt.Errorf("sethostname: %w", err))
	}
	return errors.Join(errs...)
}

// copyEntry copies src to dst as it is: a directory tree, a regular file,
// a symlink or a device node, with mode and owner.
func copyEntry(src, dst string) error {
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	sys, _ := st.Sys().(*unix.Stat_t)
	own := func() error {
		if sys == nil {
			return nil
		}
		return os.Lchown(dst, int(sys.Uid), int(sys.Gid))
	}
	switch m := st.Mode(); {
	case m.IsDir():
		if err := os.Mkdir(dst, m.Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		ents, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := copyEntry(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
		if err := os.Chmod(dst, m.Perm()|m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
		return own()
	case m&fs.ModeSymlink != 0:
		t, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(t, dst); err != nil {
			return err
		}
		return own()
	case m.IsRegular():
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, m.Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		if err := own(); err != nil {
			return err
		}
		return os.Chmod(dst, m.Perm()|m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
	default:
		if sys == nil {
			return fmt.Errorf("%s: special file without stat data", src)
		}
		if err := unix.Mknod(dst, sys.Mode, int(sys.Rdev)); err != nil {
			return err
		}
		return own()
	}
}

// releaseState unmounts the state partition at stateMnt after a failed
// assemble, so that the next try can open it again. The persistent
// paths' bind mounts under newroot hold its filesystem too, so newroot's
// tree is detached first (if it is mounted: EINVAL otherwise, ignored);
// else the partition would stay busy and the retry boot without it.
func releaseState(newroot, stateMnt string) error {
	if err := unix.Unmount(newroot, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("detach %s: %w", newroot, err)
	}
	return unix.Unmount(stateMnt, 0)
}
