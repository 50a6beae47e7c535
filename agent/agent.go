// Package agent is what runs inside imprint's initramfs, as /init: it
// brings the network up, fetches the image, checks every chunk, and either
// runs the root from RAM (diskless) or deploys it onto the local disk
// (install) and reboots.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/identity"
	"github.com/imprint-dev/imprint/layout"
	"golang.org/x/sys/unix"
)

// Params come from the kernel command line.
type Params struct {
	Sources []string // imprint.source=URL[,URL...]
	Image   string   // imprint.image=NAME[:VERSION]
	// Install is imprint.install=DISK: a /dev path or a disk selector
	// (serial=S,size>=N, largest; see disk.Select), resolved at boot.
	Install string
	OnFail  string // imprint.onfail=reboot|shell|halt
	// Iface pins the network interface (imprint.iface=eth0); default: the
	// first one with a carrier that gets a DHCP lease.
	Iface string
	// AllowDowngrade (imprint.allow-downgrade) lets an install replace a
	// newer version of the image on the disk with the older one served.
	AllowDowngrade bool
	// Trust are minisign public keys (imprint.trust=KEY[,KEY]); with any,
	// only images signed by one of them are run or installed.
	Trust []string

	// Mode is imprint.mode=local (root from this disk by root=PARTUUID=),
	// else diskless or install as the other parameters say.
	Mode string
	Root string // root=PARTUUID=... (local mode)
	// Node and Class name this node (imprint.node=, imprint.class=);
	// empty: found from the machine and the image's class map.
	Node, Class string
	// Verify is imprint.verify=none|quick|chunks|full (local mode).
	Verify string
	// State is imprint.state=PARTUUID=...|/dev/X|none: where persistent
	// paths live. Empty: the "state" partition of the root's disk on a
	// local boot, none on a diskless one.
	State string
	// Identity is imprint.identity=URL: a site's signed identity map
	// (served by imprint serve --identity) to use instead of the image's.
	// Diskless boots look under their sources without it; local boots
	// only with it.
	Identity string
	// RW says the command line asked for a read-write root; it still gets
	// a read-only one under a writable overlay.
	RW bool
	// RootMode is imprint.root=ondemand|ram for a diskless boot: the root
	// read from the network as it is used, through /dev/nbdN ("" is
	// ondemand), or fetched whole into RAM and checked before the system
	// starts.
	RootMode string
	// CacheBytes is imprint.cache=SIZE: the RAM an on-demand root keeps
	// fetched chunks in, beside the kernel's page cache (0: DefaultCache).
	CacheBytes int64
	// Fill is imprint.fill=1: an on-demand root also fetches the chunks
	// not read yet, in the background, and keeps them all in RAM, so it
	// survives its sources going away (RAM: the root's non-zero bytes).
	Fill bool
	// Readahead is imprint.readahead=N: on a miss, an on-demand root also
	// fetches the next N non-zero chunks at once (0: off; nil:
	// DefaultReadahead).
	Readahead *int
	// Slice is imprint.slice=SIZE: a read an on-demand root misses fetches
	// the image's signed swarm pieces around it, SIZE bytes (whole pieces,
	// within its chunk), from the server's web seed rather than its whole
	// chunk (0: whole chunks; nil: ondemand.DefaultWindow).
	Slice *int64
	// Swarm is imprint.swarm=1: an install, or a diskless root in RAM,
	// takes its chunks from the image's BitTorrent swarm first (the first
	// http(s) source is tracker and web seed) and seeds what it checked;
	// an on-demand root asks the swarm's peers for a chunk a read misses
	// before its sources, and keeps and seeds every chunk it read (its
	// RAM then grows with the bytes read: the cache bound does not apply).
	// Off by default, as deploy's --swarm is.
	Swarm bool
	// SwarmPeers is imprint.swarm-peers=N: the most peers the agent's
	// swarm node is connected to (0: by the node's RAM, swarmPeers).
	SwarmPeers int
}

// Diskless root modes (imprint.root=).
const (
	RootOnDemand = "ondemand"
	RootRAM      = "ram"
)

// DefaultCache is imprint.cache= when the command line does not say.
const DefaultCache = 64 << 20

// DefaultReadahead is imprint.readahead= when the command line does not
// say: off. Measured on the Debian root under TCG, 8 made boots slower
// (1.38-1.46x local against 1.04-1.29x without; the guest's cost per
// chunk, zstd and SHA-256, is CPU) and fetched 2.3-2.9x the chunks; 2
// gained ~0.1x at most, within the noise, for 1.35x the chunks
// (docs/performance.md, "Read-ahead").
const DefaultReadahead = 0

// MaxReadahead bounds imprint.readahead=: each chunk ahead is a fetch in
// flight and a chunk in the cache.
const MaxReadahead = 64

// MaxSlice bounds imprint.slice=: the largest chunk the format allows.
const MaxSlice = 64 << 20

// parseSlice reads imprint.slice=: a size as layout.ParseSize reads it,
// any number of bytes (the window is rounded up to whole pieces anyway),
// and 0 with or without a unit (off).
func parseSlice(v string) (int64, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n, nil
	}
	if num := strings.TrimRightFunc(v, unicode.IsLetter); num != "" && strings.Trim(num, "0") == "" {
		return 0, nil
	}
	return layout.ParseSize(v)
}

// ParseCmdline reads imprint.* parameters.
func ParseCmdline(c string) (Params, error) {
	p := Params{OnFail: "reboot"}
	var cacheErr, fillErr, swarmErr, raErr, peersErr, sliceErr error
	for _, w := range strings.Fields(c) {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "imprint.source":
			for _, s := range strings.Split(v, ",") {
				if s != "" {
					p.Sources = append(p.Sources, s)
				}
			}
		case "imprint.image":
			p.Image = v
		case "imprint.install":
			p.Install = v
		case "imprint.onfail":
			p.OnFail = v
		case "imprint.allow-downgrade":
			p.AllowDowngrade = v == "" || v == "1" || v == "yes"
		case "imprint.iface":
			p.Iface = v
		case "imprint.mode":
			p.Mode = v
		case "root":
			p.Root = v
		case "imprint.node":
			p.Node = v
		case "imprint.class":
			p.Class = v
		case "imprint.verify":
			p.Verify = v
		case "imprint.state":
			p.State = v
		case "imprint.identity":
			p.Identity = v
		case "rw":
			p.RW = true
		case "imprint.root":
			p.RootMode = v
		case "imprint.fill":
			if on, err := parseFlag(k, v); err != nil {
				fillErr = err
			} else {
				p.Fill = on
			}
		case "imprint.cache":
			n, err := layout.ParseSize(v)
			if err != nil {
				cacheErr = fmt.Errorf("imprint.cache=%s: %w", v, err)
			}
			p.CacheBytes = n
		case "imprint.readahead":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > MaxReadahead {
				raErr = fmt.Errorf("imprint.readahead=%s: want a number of chunks from 0 (off) to %d", v, MaxReadahead)
			}
			p.Readahead = &n
		case "imprint.slice":
			n, err := parseSlice(v)
			switch {
			case err != nil:
				sliceErr = fmt.Errorf("imprint.slice=%s: want a size from 0 (whole chunks) to %d (e.g. 128K): %w", v, MaxSlice, err)
			case n < 0 || n > MaxSlice:
				sliceErr = fmt.Errorf("imprint.slice=%s: want a size from 0 (whole chunks) to %d (e.g. 128K)", v, MaxSlice)
			}
			p.Slice = &n
		case "imprint.swarm":
			if on, err := parseFlag(k, v); err != nil {
				swarmErr = err
			} else {
				p.Swarm = on
			}
		case "imprint.swarm-peers":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxSwarmPeers {
				peersErr = fmt.Errorf("imprint.swarm-peers=%s: want a number of peers from 1 to %d", v, MaxSwarmPeers)
			}
			p.SwarmPeers = n
		case "imprint.trust":
			for _, k := range strings.Split(v, ",") {
				if k != "" {
					p.Trust = append(p.Trust, k)
				}
			}
		}
	}
	switch p.Mode {
	case ModeLocal:
		if !strings.HasPrefix(p.Root, "PARTUUID=") {
			return p, fmt.Errorf("imprint.mode=local needs root=PARTUUID=GUID on the kernel command line (have root=%q)", p.Root)
		}
	case "", "diskless", "install":
		if len(p.Sources) == 0 {
			return p, fmt.Errorf("no imprint.source=URL on the kernel command line")
		}
	default:
		return p, fmt.Errorf("imprint.mode=%s: want local (or leave it out)", p.Mode)
	}
	switch p.RootMode {
	case "", RootOnDemand, RootRAM:
	default:
		return p, fmt.Errorf("imprint.root=%s: want ondemand or ram", p.RootMode)
	}
	if cacheErr != nil {
		return p, cacheErr
	}
	if fillErr != nil {
		return p, fillErr
	}
	if swarmErr != nil {
		return p, swarmErr
	}
	if peersErr != nil {
		return p, peersErr
	}
	if raErr != nil {
		return p, raErr
	}
	if sliceErr != nil {
		return p, sliceErr
	}
	switch p.Verify {
	case "", "none", "quick", VerifyChunks, "full":
	default:
		return p, fmt.Errorf("imprint.verify=%s: want none, quick, chunks or full", p.Verify)
	}
	if p.Install != "" {
		if err := disk.CheckSelector(p.Install); err != nil {
			return p, fmt.Errorf("imprint.install=%s: %w", p.Install, err)
		}
	}
	switch p.OnFail {
	case "reboot", "shell", "halt":
	default:
		return p, fmt.Errorf("imprint.onfail=%s: want reboot, shell or halt", p.OnFail)
	}
	return p, nil
}

// Agent is one run of the initramfs program.
type Agent struct {
	Console io.Writer
	Params  Params
	// Root is where the agent finds its own files (TrustFile); "" is /.
	Root string
	// Meminfo is the /proc/meminfo the agent sizes RAM roots by; "" is
	// the kernel's (tests give a small node's).
	Meminfo string
	// Tries is how often the whole fetch is tried before onfail applies.
	Tries int
	// Settle is how long a disk selector's answer must hold still before
	// the agent installs onto it (disks appear as their drivers probe).
	Settle time.Duration
	// SwarmListen is where the swarm takes peers (tests); "" is the
	// address that routes to the imprint server, port SwarmPort.
	SwarmListen string
	// Clock is the agent's clock (tests); nil: time.Now.
	Clock func() time.Time

	// dhcpHost is the host name (option 12) of the DHCP lease, if any: a
	// node's name when the command line gives none.
	dhcpHost string
	// offered is a site's identity map whose signature verified, as the
	// network gave it; nil: none.
	offered *siteMap
	// site is the identity map this boot uses (chooseSite); nil: the
	// image's.
	site *identity.Config
	// offline says a local boot's network did not come up: its root
	// server gets no sources, so a drifted chunk's reads fail (EIO)
	// instead of waiting for sources it cannot reach.
	offline bool
}

// localNetwork brings the network up for a local boot that needs it
// (imprint.node=dhcp, imprint.identity=, or imprint.verify=chunks with
// sources to fetch drifted chunks from) and goes on without it, noting
// that it is offline, when up fails.
func (a *Agent) localNetwork(ctx context.Context, up func(context.Context, *Agent) error) {
	p := a.Params
	repair := p.Verify == VerifyChunks && len(p.Sources) > 0
	if p.Node != NodeFromDHCP && p.Identity == "" && !repair {
		return
	}
	waitEntropy(a)
	if err := up(ctx, a); err != nil {
		a.offline = true
		a.say("network for imprint.node=dhcp, imprint.identity= or imprint.verify=chunks: %v; going on without it", err)
		return
	}
	if p.Node == NodeFromDHCP || p.Identity != "" {
		a.offered = a.siteIdentity(ctx)
	}
}

// chunkSources are the sources the root server of imprint.verify=chunks
// fetches drifted chunks from: none when the network is down.
func (a *Agent) chunkSources() []string {
	if a.offline {
		return nil
	}
	return a.Params.Sources
}

// parseFlag reads a flag parameter: bare, 1 or yes is on; 0 or no off.
func parseFlag(key, v string) (bool, error) {
	switch v {
	case "", "1", "yes":
		return true, nil
	case "0", "no":
		return false, nil
	}
	return false, fmt.Errorf("%s=%s: want 1 or 0", key, v)
}

// NodeFromDHCP is imprint.node=dhcp: a local boot brings the network up
// to learn its name from the DHCP server, which it otherwise never waits
// for.
const NodeFromDHCP = "dhcp"

func (a *Agent) say(format string, args ...any) {
	fmt.Fprintf(a.Console, "IMPRINT-AGENT: "+format+"\n", args...)
}

// Main is the initramfs entry point; it returns only on failure (the
// caller then powers off or reboots as onfail says).
func Main(ctx context.Context, console io.Writer) error {
	if err := mountEarly(); err != nil {
		fmt.Fprintf(console, "IMPRINT-AGENT: FAIL mounting /proc, /sys, /dev: %v\n", err)
	}
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	p, err := ParseCmdline(string(raw))
	a := &Agent{Console: console, Params: p, Tries: 5, Settle: 2 * time.Second}
	if err != nil {
		a.say("FAIL %v", err)
		return a.fail(err)
	}
	if p.Mode == ModeLocal {
		a.say("starting: local root %s", p.Root)
		if err := loadModules(a); err != nil {
			a.say("modules: %v", err)
		}
		a.localNetwork(ctx, netUp)
		err := a.local(ctx)
		a.say("FAIL %v", err)
		return a.fail(err)
	}
	a.say("starting: image %q from %s", p.Image, strings.Join(p.Sources, ", "))
	if err := loadModules(a); err != nil {
		a.say("modules: %v", err)
	}
	waitEntropy(a)
	var last error
	for try := 1; try <= a.Tries; try++ {
		if try > 1 {
			a.say("retrying in %d s (try %d of %d)", 2*try, try, a.Tries)
			time.Sleep(time.Duration(2*try) * time.Second)
		}
		if err := netUp(ctx, a); err != nil {
			a.say("FAIL network: %v", err)
			last = err
			continue
		}
		if p.Install != "" {
			err = a.install(ctx)
		} else {
			err = a.diskless(ctx)
		}
		if err == nil {
			return nil
		}
		a.say("FAIL %v", err)
		last = err
		if errors.Is(err, ErrRAMRootTooBig) {
			// The node's RAM, not a source: another try ends the same.
			break
		}
	}
	return a.fail(last)
}

func (a *Agent) fail(err error) error {
	switch a.Params.OnFail {
	case "shell":
		for _, sh := range []string{"/bin/sh", "/bin/busybox"} {
			if _, serr := os.Stat(sh); serr == nil {
				a.say("onfail=shell: starting %s", sh)
				_ = unix.Exec(sh, []string{sh}, os.Environ())
			}
		}
		a.say("onfail=shell: no shell in this initramfs; halting")
		unix.Sync()
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_HALT)
	case "halt":
		unix.Sync()
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	default:
		a.say("onfail=reboot: rebooting in 5 s")
		time.Sleep(5 * time.Second)
		unix.Sync()
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}
	return err
}

func mountEarly() error {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}, {"tmpfs", "/run", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	return nil
}

// waitEntropy says so when the kernel's random pool is not ready: Go's
// crypto/rand (DHCP transaction ids) blocks until it is, and a machine
// without a hardware RNG can sit there silently for minutes.
func waitEntropy(a *Agent) {
	var b [1]byte
	if _, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK); err == nil {
		return
	}
	a.say("waiting for the kernel's random number generator (no hardware RNG seen)")
	start := time.Now()
	if _, err := unix.Getrandom(b[:], 0); err == nil {
		a.say("random number generator ready after %v", time.Since(start).Round(time.Millisecond))
	}
}
