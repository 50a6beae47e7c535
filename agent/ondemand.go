package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imprint-dev/imprint/agent/nbd"
	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/fetch/swarm"
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
	Fill       bool           `json:"fill,omitempty"`
	Readahead  int            `json:"readahead,omitempty"`
	// Local is the deployed root partition (imprint.verify=chunks): its
	// chunks are read from it and checked, the sources only asked for
	// the ones that drifted.
	Local string `json:"local,omitempty"`
	// Swarm, with imprint.swarm=1, puts the root in the image's swarm:
	// chunks are asked of peers first, and every chunk is kept and seeded.
	Swarm *rootSwarm `json:"swarm,omitempty"`
	// Slices, with the image's swarm pieces and imprint.slice= not 0: a
	// miss fetches the signed pieces around it from the web seed.
	Slices *ondemand.Slices `json:"slices,omitempty"`
}

// ondemandRoot starts the root server, mounts the partition it serves
// read-only and runs the shared root pipeline over it. The server is a
// process of its own, not goroutines of the agent: the agent execs the
// image's init, and the root must stay served after that.
func (a *Agent) ondemandRoot(ctx context.Context, m *image.Manifest, rp *image.Partition) error {
	begin := time.Now()
	cache := a.Params.CacheBytes
	if cache == 0 {
		cache = DefaultCache
	}
	fill := a.Params.Fill
	if fill {
		need := rp.Content.DataBytes(m.ChunkSize)
		total, err := memTotal(a.meminfo())
		if err == nil {
			err = fillFits(need, total)
		}
		if err != nil {
			// The node still boots, on demand: a root that cannot be
			// filled is better than none, and the console says why.
			a.say("WARNING: imprint.fill=1 refused, the root stays on demand and needs its sources: %v", err)
			fill = false
		} else {
			a.say("imprint.fill=1: the root's %d MiB of data will be fetched into RAM in the background (MemTotal %d MiB)", need>>20, total>>20)
		}
	}
	ra := DefaultReadahead
	if a.Params.Readahead != nil {
		ra = *a.Params.Readahead
	}
	lower := "/run/imprint/lower"
	cfg := serverConfig{Sources: a.Params.Sources, Content: rp.Content, ChunkSize: m.ChunkSize, CacheBytes: cache, Fill: fill, Readahead: ra, Swarm: a.ondemandSwarm(m, rp)}
	cfg.Slices = a.ondemandSlices(m, rp, cfg)
	dev, err := a.serveRoot(ctx, cfg, rp.Name, lower)
	if err != nil {
		return err
	}
	state := a.Params.State
	if state == "none" {
		state = ""
	}
	return a.assemble(lower, state, "the network on demand ("+dev+")", begin)
}

// ondemandSlices gives the root's pieces for cfg, or nil: whole chunks
// (imprint.slice=0, an image without the swarm-pieces extension, no
// http(s) source to serve a web seed, the modes built on whole chunks),
// said when it is not the operator's word.
func (a *Agent) ondemandSlices(m *image.Manifest, rp *image.Partition, cfg serverConfig) *ondemand.Slices {
	window := int64(ondemand.DefaultWindow)
	if a.Params.Slice != nil {
		window = *a.Params.Slice
	}
	if window == 0 || cfg.Fill || cfg.Swarm != nil || cfg.Readahead > 0 || cfg.Local != "" || deploy.SwarmServer(cfg.Sources) == "" {
		return nil
	}
	sl, err := ondemand.SlicesOf(m, rp.Content, window)
	if err != nil {
		a.say("WARNING: the image's swarm pieces are unusable (%v); the root reads whole chunks", err)
		return nil
	}
	return sl
}

// serveRoot starts the root server on a free NBD device for cfg (its
// Device filled in here) and mounts the device read-only on lower.
func (a *Agent) serveRoot(ctx context.Context, cfg serverConfig, name, lower string) (string, error) {
	dev, err := nbd.FreeDevice()
	if err != nil {
		return "", err
	}
	cfg.Device = dev
	raw, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	pid, err := startHelper(ctx, a.Console, ServerArgv0, raw, 2*time.Minute)
	if err != nil {
		return "", fmt.Errorf("the on-demand root server: %w", err)
	}
	kept := fmt.Sprintf("a %d MiB chunk cache, read-ahead %d chunks", cfg.CacheBytes>>20, cfg.Readahead)
	if cfg.Fill {
		kept = "every chunk kept (imprint.fill=1)"
	} else if cfg.Swarm != nil {
		kept = fmt.Sprintf("every chunk read kept in RAM and seeded (imprint.swarm=1), read-ahead %d chunks", cfg.Readahead)
	}
	from := "the network"
	if cfg.Slices != nil {
		from = fmt.Sprintf("the network, a miss fetching %d KiB of signed %d KiB pieces from the web seed (imprint.slice=), whole chunks from a source without one", cfg.Slices.Window>>10, cfg.Slices.PieceLength>>10)
	}
	if cfg.Local != "" {
		from = cfg.Local + ", every chunk checked as it is read"
	} else if cfg.Swarm != nil {
		from = "the image's swarm (tracker " + cfg.Swarm.Server + ", peers on " + cfg.Swarm.Listen + "), the sources when no peer has a chunk or sends none of it for 1 s (5 s at most)"
	}
	a.say("root on demand: partition %s (%d bytes in %d chunks) is %s, served by pid %d (%s) with %s, read from %s",
		name, cfg.Content.Size, len(cfg.Content.Chunks), dev, pid, ServerArgv0, kept, from)
	if err := os.MkdirAll(lower, 0o755); err != nil {
		return "", err
	}
	if err := unix.Mount(dev, lower, "ext4", unix.MS_RDONLY, "noload"); err != nil {
		if err2 := unix.Mount(dev, lower, "ext4", unix.MS_RDONLY, ""); err2 != nil {
			_ = unix.Kill(pid, unix.SIGKILL)
			return "", fmt.Errorf("mount %s (ext4, read-only): %w", dev, err2)
		}
	}
	return dev, nil
}

// fillReserve is the RAM a filled root leaves to everything else: the
// kernel, the page cache of the files in use, the overlay's tmpfs and
// the system's own processes. Small on purpose: the point of fill is a
// node that can run without its server, and the operator who asks for
// it on a small node hears why it was refused.
const fillReserve = 128 << 20

// ErrFillTooBig says a filled root would not fit in the node's RAM.
var ErrFillTooBig = errors.New("the root does not fit in RAM")

// fillFits says whether need bytes of chunks fit in a node with total
// bytes of RAM: the chunks, the garbage collector's slack over them
// (GOGC 25 in the server), and fillReserve.
func fillFits(need, total int64) error {
	if want := need + need/4 + fillReserve; want > total {
		return fmt.Errorf("%w: its %d MiB of data need %d MiB with the server's slack and %d MiB for the system; MemTotal is %d MiB",
			ErrFillTooBig, need>>20, want>>20, fillReserve>>20, total>>20)
	}
	return nil
}

// meminfo is the /proc/meminfo RAM roots are sized by (Agent.Meminfo).
func (a *Agent) meminfo() string {
	if a.Meminfo != "" {
		return a.Meminfo
	}
	return "/proc/meminfo"
}

// memTotal reads MemTotal from a /proc/meminfo.
func memTotal(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: MemTotal %q: %w", path, f[1], err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s: no MemTotal line in kB", path)
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
	status := os.NewFile(helperStatusFD, "status")
	fail := func(err error) error {
		fmt.Fprintf(status, "%v\n", err)
		status.Close()
		say("FAIL %v", err)
		return err
	}
	raw, err := io.ReadAll(os.NewFile(helperConfigFD, "config"))
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
	var local *os.File
	if cfg.Local != "" {
		if local, err = os.Open(cfg.Local); err != nil {
			return fail(err)
		}
	}
	refused := refusals{every: 10 * time.Second}
	f := fetch.New(srcs, fetch.Options{OnError: func(i int, what string, err error) {
		// Waits are said by the reader, once a round; a refused chunk is
		// said here, every time; a web seed's refused pieces at most once
		// every 10 s a source (a stale seed refuses every miss's until it
		// is turned off).
		switch {
		case !errors.Is(err, image.ErrChecksum) && !errors.Is(err, image.ErrFormat):
		case !errors.Is(err, fetch.ErrWebSeed):
			say("refused %s from %s: %v", what, cfg.Sources[i], err)
		default:
			if more, ok := refused.say(i, time.Now()); ok {
				say("refused %s from the web seed of %s%s: %v", what, cfg.Sources[i], more, err)
			}
		}
		// Once each time a web seed is turned off (fetch.Slice).
		if errors.Is(err, fetch.ErrWebSeedOff) {
			say("the web seed of %s: %v; its chunks are still asked of it", cfg.Sources[i], err)
		}
	}})
	stats := newFetchReport(say, cfg.Content.Size)
	o := ondemand.Options{
		Content: cfg.Content, ChunkSize: cfg.ChunkSize, Fetcher: f, Decoder: dec, CacheBytes: cfg.CacheBytes, Fill: cfg.Fill, Readahead: cfg.Readahead, Slices: cfg.Slices,
		Logf:    func(format string, args ...any) { say(format, args...) },
		OnFetch: func(int, int64) { stats.poke() },
	}
	if local != nil {
		// A nil io.ReaderAt, not a nil *os.File in one.
		o.Local = local
		if len(srcs) == 0 {
			o.Fetcher = nil
		}
	}
	var peers *swarm.OnDemand
	if cfg.Swarm != nil && local == nil {
		// The swarm only speeds the root up: without it, the sources.
		if peers, _, err = joinRootSwarm(cfg.Swarm, cfg.Content); err != nil {
			say("swarm: %v; the root reads from the sources only", err)
		} else {
			o.Peers = peers
			say("swarm: in the image's swarm (tracker %s), taking peers on %s from %v; a chunk a read misses is asked of peers first, of the sources when no connected peer has it (300 ms to find one while the node holds nothing), no byte of it comes for 1 s, or it takes over 5 s (longer for large chunks); every chunk read is kept in RAM and seeded while the node runs",
				cfg.Swarm.Server, cfg.Swarm.Listen, cfg.Swarm.Allowed)
		}
	}
	r, err := ondemand.New(o)
	if err != nil {
		return fail(err)
	}
	stats.r = r
	stats.peers = peers
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
	if peers != nil {
		go swarmReport(ctx, peers, say)
	}
	if cfg.Fill {
		go fill(ctx, r, say)
	}
	<-d.Done
	say("%s let go of (%v); the server ends", d.Path, d.Err)
	return d.Err
}

// fill makes the root whole in RAM and says when it is.
func fill(ctx context.Context, r *ondemand.Reader, say func(string, ...any)) {
	begin := time.Now()
	before := r.Stats()
	say("fill: fetching the rest of the root into RAM in the background (reads go first)")
	if err := r.Fill(ctx); err != nil {
		say("fill stopped: %v", err)
		return
	}
	st := r.Stats()
	took := time.Since(begin)
	say("fill complete: the root's %d bytes are in RAM, %d of them fetched by the fill in %v (%.1f MiB/s, %d bytes read on demand meanwhile); the root no longer needs its sources",
		st.CachedBytes, st.FillBytes, took.Round(time.Millisecond), float64(st.FillBytes)/(1<<20)/max(took.Seconds(), 1e-3), st.FetchedBytes-st.FillBytes-before.FetchedBytes)
}

// fetchReport says on the console how much of the root was fetched, once
// fetching has paused for a moment (or every few seconds while it goes
// on), so a boot shows what it cost without a line per chunk.
type fetchReport struct {
	say  func(string, ...any)
	size int64
	r    *ondemand.Reader
	ch   chan struct{}
	// peers, with imprint.swarm=1: each report says what they did too.
	peers *swarm.OnDemand
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

// fetchedLine says what the root fetched, st, of size bytes: in whole
// chunks and, with imprint.slice=, in windows of signed pieces.
func fetchedLine(st ondemand.Stats, size int64) string {
	in := fmt.Sprintf("%d chunks", st.FetchedChunks)
	if st.Pieces > 0 {
		in = fmt.Sprintf("%d chunks and %d signed pieces (%d bytes)", st.FetchedChunks, st.Pieces, st.PieceBytes)
	}
	return fmt.Sprintf("fetched %d bytes in %s, %d%% of the root's %d bytes (cache %d bytes, %d fetched again); read ahead: %d chunks, %d of them read since",
		st.FetchedBytes, in, st.FetchedBytes*100/max(size, 1), size, st.CachedBytes, st.Refetched, st.AheadChunks, st.AheadUsed)
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
		if st.LocalBytes > 0 || st.Drifted > 0 {
			f.say("read %d bytes of the local partition, every chunk checked (%d drifted)", st.LocalBytes, st.Drifted)
		}
		if st.FetchedChunks == 0 && st.Pieces == 0 {
			continue
		}
		f.say("%s", fetchedLine(st, f.size))
		if st.Pieces > 0 || st.PiecesRefused > 0 || st.PieceFallbacks > 0 {
			f.say("pieces: %d bytes in %d signed pieces from the web seed, %d range requests (%d pieces refused, %d windows read from whole chunks instead)",
				st.PieceBytes, st.Pieces, st.PieceRequests, st.PiecesRefused, st.PieceFallbacks)
		}
		if f.peers != nil {
			f.say("%s", swarmLine(f.peers.Stats()))
		}
	}
}

// refusals rate-limits what is said of one source's refused web seed
// answers: once every every, with how many went unsaid.
type refusals struct {
	mu     sync.Mutex
	every  time.Duration
	last   map[int]time.Time
	unsaid map[int]int
}

// say notes a refusal from source i at now and says whether to say it,
// and what to add: how many were not said since the last one.
func (r *refusals) say(i int, now time.Time) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last, r.unsaid = map[int]time.Time{}, map[int]int{}
	}
	if last, ok := r.last[i]; ok && now.Sub(last) < r.every {
		r.unsaid[i]++
		return "", false
	}
	more := ""
	if n := r.unsaid[i]; n > 0 {
		more = fmt.Sprintf(" (and %d refused answers not said in the last %v)", n, now.Sub(r.last[i]).Round(time.Second))
	}
	r.last[i], r.unsaid[i] = now, 0
	return more, true
}
