package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
)

// SwarmPort is where a node with imprint.swarm=1 takes peer connections
// (BitTorrent's usual port): while it fetches, and for a root in RAM as
// long as the node runs. It listens only on the address of the interface
// that routes to the imprint server, and takes peers only from that
// interface's network (and the server itself).
const SwarmPort = 6881

// The agent's swarm node connects to swarmPeers peers. Each peer may
// hold up to 16 MiB of requested blocks in RAM while its link is slower
// than this node (swarm.Options.MaxPeers), in a machine whose root may be
// in RAM too, so the default is what keeps that worst case within an
// eighth of MemTotal, between MinSwarmPeers and DefaultMaxSwarmPeers.
// Fewer peers is slower, not just leaner: at 16 nodes on 20 Mbit/s links
// deploys with 8 peers each took 4.5-5.1x one node's time, with 50 peers
// 2.55x (docs/scale.md); the deploys' RSS peaked at 85 MiB with 15 peers.
const (
	MinSwarmPeers        = 8
	DefaultMaxSwarmPeers = 32
	MaxSwarmPeers        = 200 // imprint.swarm-peers= at most
	peerBufferWorst      = 16 << 20
)

// peersOr is a helper process's peer cap from its config: n, or
// MinSwarmPeers when the config does not say.
func peersOr(n int) int {
	if n > 0 {
		return n
	}
	return MinSwarmPeers
}

// swarmPeers is imprint.swarm-peers=, else MemTotal/8 over 16 MiB a peer,
// kept between MinSwarmPeers and DefaultMaxSwarmPeers (MinSwarmPeers when
// MemTotal cannot be read).
func (a *Agent) swarmPeers() int {
	if a.Params.SwarmPeers > 0 {
		return a.Params.SwarmPeers
	}
	total, err := memTotal(a.meminfo())
	if err != nil {
		return MinSwarmPeers
	}
	return int(min(max(total/8/peerBufferWorst, MinSwarmPeers), DefaultMaxSwarmPeers))
}

// swarmOptions starts this node's BitTorrent client for imprint.swarm=1;
// nil without it. The swarm only speeds a fetch up: a node that cannot
// join one says why and fetches from its sources alone. The caller closes
// the node.
func (a *Agent) swarmOptions() *deploy.SwarmOptions {
	if !a.Params.Swarm {
		return nil
	}
	srv := deploy.SwarmServer(a.Params.Sources)
	if srv == "" {
		a.say("imprint.swarm=1: no http(s) imprint.source= to take the tracker and web seed from; fetching from the sources only")
		return nil
	}
	listen, nets, err := a.swarmPlace(srv)
	if err != nil {
		a.say("imprint.swarm=1: %v; fetching from the sources only", err)
		return nil
	}
	n, err := swarm.NewNode(swarm.Options{Listen: listen, AllowedNets: nets, MaxPeers: a.swarmPeers()})
	if err != nil {
		a.say("imprint.swarm=1: %v; fetching from the sources only", err)
		return nil
	}
	a.say("swarm: tracker and web seed %s, taking peers on %s from %s", srv, n.Addr(), nets[0])
	return &deploy.SwarmOptions{Node: n, Server: srv}
}

// swarmPlace is where this node takes peers for the imprint server at
// srv, and from where: the address of the interface the route to srv
// leaves by (port SwarmPort; a.SwarmListen instead when set, in tests),
// and that interface's network.
func (a *Agent) swarmPlace(srv string) (listen string, nets []netip.Prefix, err error) {
	u, err := url.Parse(srv)
	if err != nil {
		return "", nil, fmt.Errorf("swarm server %q: %w", srv, err)
	}
	local, lan, err := routeTo(u.Hostname())
	if err != nil {
		return "", nil, fmt.Errorf("swarm server %s: %w", u.Host, err)
	}
	listen = netip.AddrPortFrom(local, SwarmPort).String()
	if a.SwarmListen != "" {
		listen = a.SwarmListen
	}
	return listen, []netip.Prefix{lan}, nil
}

// routeTo gives the local address the kernel's route to host leaves
// from, and the network of the interface that holds it.
func routeTo(host string) (netip.Addr, netip.Prefix, error) {
	// A connected UDP socket sends nothing: it only has the kernel pick
	// the route and the source address.
	c, err := net.Dial("udp", net.JoinHostPort(host, "9"))
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("no route: %w", err)
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	c.Close()
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, err
	}
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			ipn, ok := ad.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || ip.Unmap() != local {
				continue
			}
			ones, _ := ipn.Mask.Size()
			return local, netip.PrefixFrom(local, ones).Masked(), nil
		}
	}
	return netip.Addr{}, netip.Prefix{}, fmt.Errorf("no interface holds %s, the address the route to %s leaves from", local, host)
}

// SeederArgv0 is argv[0] of the process that seeds a RAM root to the
// image's swarm while the node runs. Unlike the on-demand root's server
// it holds nothing the system needs, so it carries no '@': systemd's
// shutdown ends it like any other process, and it leaves the swarm then.
const SeederArgv0 = "imprint-root-seeder"

// seedConfig is what the agent hands its seeder through a pipe: the
// manifest it checked (signature, format) and the root file whose SHA-256
// it proved against it.
type seedConfig struct {
	Manifest  json.RawMessage `json:"manifest"`
	Partition string          `json:"partition"`
	File      string          `json:"file"`
	Server    string          `json:"server"`
	Listen    string          `json:"listen"`
	// Allowed are the networks it takes peers from.
	Allowed []netip.Prefix `json:"allowed"`
	// MaxPeers is the agent's swarmPeers; 0 is MinSwarmPeers.
	MaxPeers int `json:"max_peers,omitempty"`
}

// startSeeder starts this binary as the seeder of the RAM root file (a
// partition of m, proved whole), and waits until it is in the swarm. Like
// the on-demand root's server it is a process of its own: the agent execs
// the image's init, which then reaps it.
func (a *Agent) startSeeder(ctx context.Context, m *image.Manifest, partition, file, server string) (int, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	listen, nets, err := a.swarmPlace(server)
	if err != nil {
		return 0, err
	}
	cfg, err := json.Marshal(seedConfig{Manifest: raw, Partition: partition, File: file, Server: server, Listen: listen, Allowed: nets, MaxPeers: a.swarmPeers()})
	if err != nil {
		return 0, err
	}
	return startHelper(ctx, a.Console, SeederArgv0, cfg, time.Minute)
}

// The helper's inherited files (exec.Cmd.ExtraFiles start at 3).
const (
	helperConfigFD = 3
	helperStatusFD = 4
)

// startHelper starts this binary as argv0 (the root server, the seeder),
// hands it cfg on fd 3 and waits, up to timeout, for "ready" (or why not)
// on fd 4. A helper that is not ready is killed and reaped.
func startHelper(ctx context.Context, console io.Writer, argv0 string, cfg []byte, timeout time.Duration) (int, error) {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer cfgR.Close()
	defer cfgW.Close()
	stR, stW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer stR.Close()
	defer stW.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{argv0}
	cmd.Stdout, cmd.Stderr = console, console
	cmd.ExtraFiles = []*os.File{cfgR, stW}
	// A session of its own: no signal meant for the console's foreground
	// reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	cfgR.Close()
	stW.Close()
	if _, err := cfgW.Write(cfg); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 0, fmt.Errorf("handing it its config: %w", err)
	}
	cfgW.Close()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stR).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	select {
	case s := <-line:
		if s == "ready" {
			// Not waited for: after switch root the image's init is its
			// parent and reaps it.
			return cmd.Process.Pid, nil
		}
		stop()
		if s == "" {
			s = "it exited without a word"
		}
		return 0, errors.New(s)
	case <-ctx.Done():
		stop()
		return 0, ctx.Err()
	case <-time.After(timeout):
		stop()
		return 0, fmt.Errorf("it was not ready within %v", timeout)
	}
}

// SeedMain is the seeder process (argv[0] SeederArgv0): it offers the RAM
// root to the image's swarm until it is told to stop (SIGTERM, SIGINT),
// then leaves it. It returns only then, or on failure.
func SeedMain(console io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	say := func(format string, args ...any) {
		fmt.Fprintf(console, "IMPRINT-SEED: "+format+"\n", args...)
	}
	status := os.NewFile(helperStatusFD, "status")
	raw, err := io.ReadAll(os.NewFile(helperConfigFD, "config"))
	var cfg seedConfig
	if err == nil {
		err = json.Unmarshal(raw, &cfg)
	}
	if err != nil {
		err = fmt.Errorf("a config that does not parse: %w", err)
		fmt.Fprintf(status, "%v\n", err)
		status.Close()
		return err
	}
	leave, err := seedFile(cfg)
	if err != nil {
		fmt.Fprintf(status, "%v\n", err)
		status.Close()
		say("FAIL %v", err)
		return err
	}
	fmt.Fprintln(status, "ready")
	status.Close()
	<-ctx.Done()
	say("leaving the swarm")
	leave()
	return nil
}

// seedFile joins the swarm of cfg's image with its partition's chunks
// from cfg.File, all of them held: the agent proved the file whole
// against the signed manifest before it started the seeder.
func seedFile(cfg seedConfig) (leave func(), err error) {
	var m image.Manifest
	if err := json.Unmarshal(cfg.Manifest, &m); err != nil {
		return nil, fmt.Errorf("the manifest: %w", err)
	}
	var c *image.Content
	for _, p := range m.Partitions {
		if p.Name == cfg.Partition {
			c = p.Content
		}
	}
	if c == nil {
		return nil, fmt.Errorf("image %s:%s has no partition %q", m.Name, m.Version, cfg.Partition)
	}
	f, err := os.Open(cfg.File)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("the root file: %w", err)
	}
	if fi.Size() != c.Size {
		f.Close()
		return nil, fmt.Errorf("%s is %d bytes, not partition %s's %d", cfg.File, fi.Size(), cfg.Partition, c.Size)
	}
	if len(cfg.Allowed) == 0 {
		f.Close()
		return nil, errors.New("the config names no network to take peers from")
	}
	n, err := swarm.NewNode(swarm.Options{Listen: cfg.Listen, AllowedNets: cfg.Allowed, MaxPeers: peersOr(cfg.MaxPeers)})
	if err != nil {
		f.Close()
		return nil, err
	}
	s, err := n.Join(&m, cfg.Server, []swarm.Place{{Content: c, Target: readOnly{f}, Have: func(int) bool { return true }}})
	if err != nil {
		n.Close()
		f.Close()
		return nil, err
	}
	return func() { s.Leave(); n.Close(); f.Close() }, nil
}

// readOnly is a seeded file: every piece is held, so the engine never
// writes; if it tried, it would be told no.
type readOnly struct{ f *os.File }

func (r readOnly) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r readOnly) WriteAt([]byte, int64) (int, error) {
	return 0, errors.New("the seeded root is read-only")
}
