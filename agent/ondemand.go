package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/imprint-dev/imprint/agent/nbd"
	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
	"golang.org/x/sys/unix"
)

// ServerArgv0 is argv[0] of the process that serves an on-demand root.
// The '@' is systemd's mark of a root storage daemon: its shutdown
// killing spree passes over such processes (they run as root and were
// started from the initramfs), so the root stays readable until the
// machine is down. cmd/imprint runs ServerMain for it.
const ServerArgv0 = "@imprint-root-server"

// serverConfig is what the agent hands its root server through a pipe.
// The manifest behind Content was checked (signature, format) by the
// agent; the server trusts it as its parent's word.
type serverConfig struct {
	Device     string         `json:"device"`
	Sources    []string       `json:"sources"`
	Content    *image.Content `json:"content"`
	ChunkSize  int64          `json:"chunk_size"`
	CacheBytes int64          `json:"cache_bytes"`
}

// The server's inherited files (exec.Cmd.ExtraFiles start at 3).
const (
	serverConfigFD = 3
	serverStatusFD = 4
)

// ondemandRoot starts the root server, mounts the partition it serves
// read-only and runs the shared root pipeline over it. The server is a
// process of its own, not goroutines of the agent: the agent execs the
// image's init, and the root must stay served after that.
func (a *Agent) ondemandRoot(ctx context.Context, m *image.Manifest, rp *image.Partition) error {
	begin := time.Now()
	dev, err := nbd.FreeDevice()
	if err != nil {
		return err
	}
	cache := a.Params.CacheBytes
	if cache == 0 {
		cache = DefaultCache
	}
	cfg, err := json.Marshal(serverConfig{Device: dev, Sources: a.Params.Sources, Content: rp.Content, ChunkSize: m.ChunkSize, CacheBytes: cache})
	if err != nil {
		return err
	}
	pid, err := startServer(ctx, a.Console, cfg)
	if err != nil {
		return fmt.Errorf("the on-demand root server: %w", err)
	}
	a.say("root on demand: partition %s (%d bytes in %d chunks) is %s, served by pid %d (%s) with a %d MiB chunk cache",
		rp.Name, rp.Content.Size, len(rp.Content.Chunks), dev, pid, ServerArgv0, cache>>20)
	lower := "/run/imprint/lower"
	if err := os.MkdirAll(lower, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, lower, "ext4", unix.MS_RDONLY, "noload"); err != nil {
		if err2 := unix.Mount(dev, lower, "ext4", unix.MS_RDONLY, ""); err2 != nil {
			_ = unix.Kill(pid, unix.SIGKILL)
			return fmt.Errorf("mount %s (ext4, read-only): %w", dev, err2)
		}
	}
	state := a.Params.State
	if state == "none" {
		state = ""
	}
	return a.assemble(lower, state, "the network on demand ("+dev+")", begin)
}

// startServer starts this binary as the root server, hands it cfg and
// waits until it says the device is up (or why not).
func startServer(ctx context.Context, console io.Writer, cfg []byte) (int, error) {
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
	cmd.Args = []string{ServerArgv0}
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
		return 0, fmt.Errorf("handing it its config: %w", err)
	}
	cfgW.Close()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stR).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case s := <-line:
		if s == "ready" {
			// Not waited for: after switch root the image's init is its
			// parent and reaps it.
			return cmd.Process.Pid, nil
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if s == "" {
			s = "it exited without a word"
		}
		return 0, errors.New(s)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 0, ctx.Err()
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 0, errors.New("it did not bring the device up within 2 minutes")
	}
}

// ServerMain is the root server process (argv[0] ServerArgv0): it serves
// the partition its parent names on an NBD device, for as long as the
// kernel holds the device, which is until the machine is down. It returns
// only on failure.
func ServerMain(console io.Writer) error {
	say := func(format string, args ...any) {
		fmt.Fprintf(console, "IMPRINT-NBD: "+format+"\n", args...)
	}
	// systemd's shutdown sends SIGTERM, then SIGKILL, to what it does not
	// pass over; the '@' keeps us off its list, and these keep a stray
	// signal from taking the root away.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	status := os.NewFile(serverStatusFD, "status")
	fail := func(err error) error {
		fmt.Fprintf(status, "%v\n", err)
		status.Close()
		say("FAIL %v", err)
		return err
	}
	raw, err := io.ReadAll(os.NewFile(serverConfigFD, "config"))
	if err != nil {
		return fail(fmt.Errorf("reading the config: %w", err))
	}
	var cfg serverConfig
	if err := json.Unmarshal(raw, &cfg); err != nil || cfg.Content == nil {
		return fail(fmt.Errorf("a config that does not parse (%v)", err))
	}
	// The chunk cache is the bound; keep the garbage collector from
	// letting dropped chunks double it.
	debug.SetGCPercent(25)
	var srcs []store.Source
	for _, s := range cfg.Sources {
		src, err := store.OpenSource(s)
		if err != nil {
			return fail(fmt.Errorf("imprint.source=%s: %w", s, err))
		}
		srcs = append(srcs, src)
	}
	dec, err := image.NewDecoder()
	if err != nil {
		return fail(err)
	}
	f := fetch.New(srcs, fetch.Options{OnError: func(i int, what string, err error) {
		// Waits are said by the reader, once a round; a refused chunk is
		// said here, every time.
		if errors.Is(err, image.ErrChecksum) || errors.Is(err, image.ErrFormat) {
			say("refused %s from %s: %v", what, cfg.Sources[i], err)
		}
	}})
	stats := newFetchReport(say, cfg.Content.Size)
	r, err := ondemand.New(ondemand.Options{
		Content: cfg.Content, ChunkSize: cfg.ChunkSize, Fetcher: f, Decoder: dec, CacheBytes: cfg.CacheBytes,
		Logf:    func(format string, args ...any) { say(format, args...) },
		OnFetch: func(int, int64) { stats.poke() },
	})
	if err != nil {
		return fail(err)
	}
	stats.r = r
	ctx := context.Background()
	d, err := nbd.Attach(ctx, cfg.Device, r, cfg.Content.Size, nbd.Options{OnError: func(off int64, n int, err error) {
		say("read of %d bytes at %d failed: %v", n, off, err)
	}})
	if err != nil {
		return fail(err)
	}
	fmt.Fprintln(status, "ready")
	status.Close()
	go stats.run(ctx)
	<-d.Done
	say("%s let go of (%v); the server ends", d.Path, d.Err)
	return d.Err
}

// fetchReport says on the console how much of the root was fetched, once
// fetching has paused for a moment (or every few seconds while it goes
// on), so a boot shows what it cost without a line per chunk.
type fetchReport struct {
	say  func(string, ...any)
	size int64
	r    *ondemand.Reader
	ch   chan struct{}
}

func newFetchReport(say func(string, ...any), size int64) *fetchReport {
	return &fetchReport{say: say, size: size, ch: make(chan struct{}, 1)}
}

func (f *fetchReport) poke() {
	select {
	case f.ch <- struct{}{}:
	default:
	}
}

func (f *fetchReport) run(ctx context.Context) {
	const quiet, most = 500 * time.Millisecond, 5 * time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.ch:
		}
		first := time.Now()
	settle:
		for time.Since(first) < most {
			select {
			case <-f.ch:
			case <-time.After(quiet):
				break settle
			}
		}
		st := f.r.Stats()
		f.say("fetched %d bytes in %d chunks, %d%% of the root's %d bytes (cache %d bytes, %d chunks fetched again)",
			st.FetchedBytes, st.FetchedChunks, st.FetchedBytes*100/max(f.size, 1), f.size, st.CachedBytes, st.Refetched)
	}
}
