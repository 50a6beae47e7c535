package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
	"golang.org/x/sys/unix"
)

func (a *Agent) sources() ([]store.Source, error) {
	var out []store.Source
	for _, s := range a.Params.Sources {
		src, err := store.OpenSource(s)
		if err != nil {
			return nil, fmt.Errorf("imprint.source=%s: %w", s, err)
		}
		out = append(out, src)
	}
	return out, nil
}

func (a *Agent) resolve(ctx context.Context, srcs []store.Source) (*image.Resolved, error) {
	name, version, _ := strings.Cut(a.Params.Image, ":")
	if name == "" {
		return nil, fmt.Errorf("no imprint.image=NAME[:VERSION] on the kernel command line")
	}
	trust, err := a.trust()
	if err != nil {
		return nil, err
	}
	r, err := fetch.New(srcs, fetch.Options{}).Resolve(ctx, name, version, trust)
	if err != nil {
		return nil, err
	}
	signed := "unsigned, no imprint.trust given"
	if trust != nil {
		signed = "signature verified"
	}
	a.say("image %s:%s, id %s (%s)", r.Manifest.Name, r.Manifest.Version, r.ID, signed)
	return r, nil
}

// trust gives the keys images must be signed by. Keys baked into the
// initramfs win over the command line: whoever can edit the boot entry
// must not be able to swap the key.
func (a *Agent) trust() (*image.Trust, error) {
	root := a.Root
	if root == "" {
		root = "/"
	}
	if b, err := os.ReadFile(filepath.Join(root, TrustFile)); err == nil {
		keys := strings.Fields(string(b))
		if len(a.Params.Trust) > 0 {
			a.say("imprint.trust= on the command line is ignored: the initramfs carries its own trusted keys")
		}
		t, err := image.ParseTrust(keys)
		if err != nil {
			return nil, fmt.Errorf("/%s: %w", TrustFile, err)
		}
		return t, nil
	}
	t, err := image.ParseTrust(a.Params.Trust)
	if err != nil {
		return nil, fmt.Errorf("imprint.trust=: %w", err)
	}
	return t, nil
}

// fileTarget is the RAM copy of the root.
type fileTarget struct{ f *os.File }

func (t fileTarget) ReadAt(p []byte, off int64) (int, error)  { return t.f.ReadAt(p, off) }
func (t fileTarget) WriteAt(p []byte, off int64) (int, error) { return t.f.WriteAt(p, off) }
func (t fileTarget) ZeroRange(off, n int64) error {
	// A new file in tmpfs reads as zeros already; punching keeps it so.
	return unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// diskless runs the image's root from the network with a tmpfs overlay
// for writes: read on demand (ondemandRoot), or with imprint.root=ram
// fetched whole into RAM and proved before it starts. The local disk is
// never opened.
func (a *Agent) diskless(ctx context.Context) error {
	srcs, err := a.sources()
	if err != nil {
		return err
	}
	res, err := a.resolve(ctx, srcs)
	if err != nil {
		return err
	}
	rp, err := res.Manifest.RootPartition()
	if err != nil {
		return err
	}
	a.offered = a.siteIdentity(ctx)
	if err := os.MkdirAll("/run/imprint", 0o755); err != nil {
		return err
	}
	if a.Params.RootMode != RootRAM {
		return a.ondemandRoot(ctx, res.Manifest, rp)
	}
	img := "/run/imprint/root.img"
	sw := a.swarmOptions()
	if err := a.fetchRAMRoot(ctx, srcs, res.Manifest, rp, img, sw); err != nil {
		if sw != nil {
			sw.Node.Close()
		}
		return err
	}
	if sw != nil {
		// The seeder takes the port over: it seeds the proved root for as
		// long as the node runs.
		sw.Node.Close()
		if pid, err := a.startSeeder(ctx, res.Manifest, rp.Name, img, sw.Server); err != nil {
			a.say("swarm: the root's seeder: %v; the node runs without seeding", err)
		} else {
			a.say("swarm: the root is seeded from RAM by pid %d (%s)", pid, SeederArgv0)
		}
	}
	return runRoot(a, img)
}

// fetchRAMRoot fetches partition rp of m whole into the file img and
// proves it against the manifest's SHA-256: with sw, the chunks the swarm
// gives first (each checked, and seeded while the rest comes), then the
// rest from the sources.
func (a *Agent) fetchRAMRoot(ctx context.Context, srcs []store.Source, m *image.Manifest, rp *image.Partition, img string, sw *deploy.SwarmOptions) error {
	c := rp.Content
	if err := ramRootFits(c.DataBytes(m.ChunkSize), filepath.Dir(img), a.meminfo()); err != nil {
		return err
	}
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(c.Size); err != nil {
		return fmt.Errorf("%d bytes of RAM for the root: %w", c.Size, err)
	}
	dec, err := image.NewDecoder()
	if err != nil {
		return err
	}
	defer dec.Close()
	cp := &copier.Copier{Dec: dec, ChunkSize: m.ChunkSize,
		Fetch: fetch.New(srcs, fetch.Options{OnError: func(i int, _ string, err error) {
			a.say("source %s: %v; trying the next source", a.Params.Sources[i], err)
		}})}
	a.say("fetching partition %s: %d bytes in %d chunks", rp.Name, c.Size, len(c.Chunks))
	have := copier.NewBitmap(len(c.Chunks))
	var fromSwarm atomic.Int64
	if sw != nil {
		err := sw.Take(ctx, m, []swarm.Place{{Content: c, Target: fileTarget{f}, Have: have.Has, Done: func(i int) {
			have.Set(i)
			fromSwarm.Add(c.ChunkLen(i, m.ChunkSize))
		}}}, func(msg string) { a.say("%s", msg) })
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			a.say("swarm: %v; the rest comes from the sources", err)
		}
		a.say("swarm: %d bytes of the root", fromSwarm.Load())
	}
	var mu sync.Mutex
	var done int64
	next := int64(0)
	err = cp.Write(ctx, c, fileTarget{f}, copier.Hooks{Skip: have.Has, Progress: func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		done += n
		if done >= next {
			a.say("fetched %d%%", done*100/max(c.Size, 1))
			next += max(c.Size/5, 1)
		}
	}})
	if errors.Is(err, unix.ENOSPC) {
		// The RAM, not a source, failed: asking the sources again fills
		// the same tmpfs again.
		return fmt.Errorf("%w: %s filled up while the root was fetched (%v); boot it with imprint.root=ondemand", ErrRAMRootTooBig, filepath.Dir(img), err)
	}
	if err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, c.Size)); err != nil {
		return err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if sum != c.SHA256 {
		return fmt.Errorf("%w: the assembled root hashes to %s, the image says %s", image.ErrChecksum, sum, c.SHA256)
	}
	from := cp.BytesFrom()
	var parts []string
	if sw != nil {
		parts = append(parts, fmt.Sprintf("%d bytes from the swarm", fromSwarm.Load()))
	}
	for i, n := range from {
		parts = append(parts, fmt.Sprintf("%d bytes from %s", n, a.Params.Sources[i]))
	}
	a.say("root sha256=%s matches the image (%s)", sum, strings.Join(parts, ", "))
	return nil
}

// ErrRAMRootTooBig says an imprint.root=ram root does not fit in the
// node's RAM: no source can help, so the agent does not try again.
var ErrRAMRootTooBig = errors.New("the root does not fit in RAM")

// ramRootFits says whether need bytes of a root's data fit in the tmpfs
// holding dir and in the node's RAM (MemTotal of meminfo, less
// fillReserve for the system), before a byte is fetched: found out at
// chunk N, it costs the whole fetch, again for every try.
func ramRootFits(need int64, dir, meminfo string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("the free space of %s: %w", dir, err)
	}
	free, size := int64(st.Bavail)*st.Bsize, int64(st.Blocks)*st.Bsize
	total, err := memTotal(meminfo)
	if err != nil {
		return err
	}
	return ramFits(need, dir, free, size, total)
}

func ramFits(need int64, dir string, free, size, total int64) error {
	switch {
	case need > free:
		return fmt.Errorf("%w: imprint.root=ram needs the root's %d MiB of data in %s, which has %d MiB free (of %d MiB; MemTotal %d MiB); boot it with imprint.root=ondemand, which fetches only what is read",
			ErrRAMRootTooBig, need>>20, dir, free>>20, size>>20, total>>20)
	case need+fillReserve > total:
		return fmt.Errorf("%w: imprint.root=ram needs the root's %d MiB of data in RAM and %d MiB for the system; MemTotal is %d MiB (%s: %d MiB free); boot it with imprint.root=ondemand, which fetches only what is read",
			ErrRAMRootTooBig, need>>20, fillReserve>>20, total>>20, dir, free>>20)
	}
	return nil
}

// runRoot mounts the root image read-only and runs the same root pipeline
// as a local boot. A diskless node writes no local disk unless the command
// line names a state partition (imprint.state=).
func runRoot(a *Agent, img string) error {
	begin := time.Now()
	loop, err := attachLoop(img)
	if err != nil {
		return err
	}
	lower := "/run/imprint/lower"
	if err := os.MkdirAll(lower, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(loop, lower, "ext4", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount %s (ext4, read-only): %w", loop, err)
	}
	state := a.Params.State
	if state == "none" {
		state = ""
	}
	return a.assemble(lower, state, "RAM ("+loop+")", begin)
}

func attachLoop(img string) (string, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("loop devices: %w", err)
	}
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	ctl.Close()
	if err != nil {
		return "", fmt.Errorf("no free loop device: %w", err)
	}
	dev := fmt.Sprintf("/dev/loop%d", n)
	lf, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer lf.Close()
	bf, err := os.Open(img)
	if err != nil {
		return "", err
	}
	defer bf.Close()
	cfg := unix.LoopConfig{Fd: uint32(bf.Fd())}
	cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY
	if err := unix.IoctlLoopConfigure(int(lf.Fd()), &cfg); err != nil {
		return "", fmt.Errorf("attach %s to %s: %w", img, dev, err)
	}
	return dev, nil
}

// switchRoot moves the early mounts into the new root, makes it / and
// runs its init.
func switchRoot(newroot, init string) error {
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		dst := filepath.Join(newroot, m)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			continue // a read-only lower without the directory: leave it
		}
		_ = unix.Mount(m, dst, "", unix.MS_MOVE, "")
	}
	if err := os.Chdir(newroot); err != nil {
		return err
	}
	if err := unix.Mount(newroot, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", newroot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return unix.Exec(init, []string{init}, os.Environ())
}

// install deploys the image onto the local disk with the same code as
// imprint deploy, then reboots into it.
func (a *Agent) install(ctx context.Context) error {
	srcs, err := a.sources()
	if err != nil {
		return err
	}
	res, err := a.resolve(ctx, srcs)
	if err != nil {
		return err
	}
	target, err := a.installDisk(ctx)
	if err != nil {
		return err
	}
	out, err := a.deployTo(ctx, srcs, res, target)
	if err != nil {
		return err
	}
	a.say("installed %s:%s onto %s, verified; rebooting into it", res.Manifest.Name, res.Manifest.Version, out.Plan.Disk)
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

// installDisk resolves imprint.install= on this machine. Drivers probe
// disks one after another, so "largest" asked too early picks the largest
// disk seen so far: the answer (or the failure) must come out the same
// twice in a row, Settle apart, before it counts.
func (a *Agent) installDisk(ctx context.Context) (string, error) {
	root := a.Root
	if root == "" {
		root = "/"
	}
	sel := a.Params.Install
	var last string
	var lastErr error
	for round := 0; ; round++ {
		got, err := disk.Select(root, sel)
		if round > 0 && got == last && fmt.Sprint(err) == fmt.Sprint(lastErr) {
			break
		}
		if round == 15 {
			return "", fmt.Errorf("imprint.install=%s: the machine's disks kept changing (last answer %q, %v)", sel, got, err)
		}
		last, lastErr = got, err
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(a.Settle):
		}
	}
	if lastErr != nil {
		return "", fmt.Errorf("imprint.install=%s: %w", sel, lastErr)
	}
	if last != sel {
		a.say("imprint.install=%s is %s", sel, last)
	}
	return last, nil
}

// deployTo writes res onto disk. The boot loaders are the image's own,
// fetched like the root: every chunk from whichever source gives it right,
// checked against the signed manifest. The initramfs carries none, and
// nothing is taken from a server unchecked.
func (a *Agent) deployTo(ctx context.Context, srcs []store.Source, res *image.Resolved, disk string) (*deploy.Result, error) {
	a.say("installing onto %s", disk)
	boot := installBoot(res.Manifest, a.say)
	last := -1
	sw := a.swarmOptions()
	if sw != nil {
		// Seeding ends with the install: the node reboots into the disk.
		defer sw.Node.Close()
	}
	out, err := deploy.Deploy(ctx, deploy.Options{
		Sources: srcs, Image: res, Disk: disk, Verify: true, TmpDir: "/run", Boot: boot, AllowDowngrade: a.Params.AllowDowngrade, Swarm: sw,
		Events: func(e deploy.Event) {
			switch e.Kind {
			case "phase":
				a.say("deploy: %s %s", e.Phase, e.Partition)
			case "warning":
				a.say("deploy: warning: %s", e.Message)
			case "progress":
				if pct := int(e.Done * 100 / max(e.Total, 1)); pct/25 != last {
					last = pct / 25
					a.say("deploy: %s %s %d%%", e.Phase, e.Partition, pct)
				}
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("deploy to %s: %w", disk, err)
	}
	if sw != nil {
		// Zero chunks come from neither: they are written as holes.
		var srcBytes int64
		for _, n := range out.BytesFrom {
			srcBytes += n
		}
		a.say("deploy: %d bytes from the swarm, %d from the sources (boot files included)", out.FromSwarm, srcBytes)
	}
	return out, nil
}

// installBoot is the boot menu an install writes: systemd-boot with a
// netboot entry, each left out, with a message, when the image carries no
// binary for it.
func installBoot(m *image.Manifest, say func(string, ...any)) deploy.BootOptions {
	boot := deploy.BootOptions{Timeout: 1}
	if m.Loaders[image.LoaderSystemdBoot] == nil {
		say("the image carries no %s: the disk gets no boot menu", image.LoaderSystemdBoot)
		boot.Skip = true
	}
	if m.Loaders[image.LoaderIPXEEFI] == nil {
		say("the image carries no %s: the disk's menu gets no netboot entry", image.LoaderIPXEEFI)
		boot.NoNetboot = true
	}
	return boot
}
