//go:build vmtest

package vmtests

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/agent"
	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/netboot"
	imstore "github.com/imprint-dev/imprint/store"
	"github.com/imprint-dev/imprint/vmtests/fixture"
)

// DisklessBenchEnv opts in to TestDisklessBootTimes (bench/diskless/run.sh):
// a dozen Debian boots are a measurement, not a check the suite needs.
const DisklessBenchEnv = "IMPRINT_BENCH_DISKLESS"

// DisklessBenchRepsEnv is how many boots each case gets (default 2).
const DisklessBenchRepsEnv = "IMPRINT_BENCH_REPS"

// DisklessBenchCPUEnv lists the QEMU CPU models (-cpu) the small half
// boots every case with, e.g. "qemu64,max" (default: QEMU's, qemu64).
const DisklessBenchCPUEnv = "IMPRINT_BENCH_CPU"

// DisklessBenchChunkEnv lists chunk sizes (imprint build --chunk-size),
// e.g. "1M 256K" or "1M,256K,128K": the small half's diskless cases boot
// one image of the Debian root per size, named case/size (default: one
// image, image.DefaultChunkSize). The local boot reads its disk, so it is
// the same for every size.
const DisklessBenchChunkEnv = "IMPRINT_BENCH_CHUNK"

// DisklessBenchSliceEnv lists imprint.slice= values, e.g. "0 64K 128K":
// the small half's dl-ondemand case boots once per value a round, as
// dl-ondemand-s<value> (0: whole chunks). Unset: dl-ondemand alone, with
// the agent's default (ondemand.DefaultWindow).
const DisklessBenchSliceEnv = "IMPRINT_BENCH_SLICE"

// fillerBytes is what the big image adds to the Debian root: random bytes
// (no compression or dedup helps) in files no boot opens.
const fillerBytes = 2 << 30

// multiUserTexts are how systemd says it reached multi-user.target on the
// console: 252 colours the unit name ("Reached target \x1b[0;1;39m..."),
// plain lines come without a terminal or from older versions. The first
// one seen is the reached line (the stopped line comes at shutdown).
var multiUserTexts = []string{"multi-user.target\x1b[0m - Multi-User System", "Reached target multi-user.target", "Reached target Multi-User System"}

var (
	ndbFetchedRe = regexp.MustCompile(`IMPRINT-NBD: fetched (\d+) bytes in (\d+) chunks.*\(cache (\d+) bytes, (\d+) fetched again\)`)
	ndbPiecesRe  = regexp.MustCompile(`IMPRINT-NBD: pieces: (\d+) bytes in (\d+) signed pieces from the web seed, (\d+) range requests`)
)

// stampWriter notes when each of its texts first appears in what is
// written through it: the console's arrival times, seen from the host.
type stampWriter struct {
	begin time.Time
	texts []string

	mu    sync.Mutex
	buf   []byte
	stamp map[string]time.Duration
}

func newStampWriter(texts ...string) *stampWriter {
	return &stampWriter{begin: time.Now(), texts: texts, stamp: map[string]time.Duration{}}
}

func (w *stampWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Look only at the new bytes plus enough before them for a text cut
	// in two by the pipe.
	from := max(len(w.buf)-128, 0)
	w.buf = append(w.buf, p...)
	now := time.Since(w.begin)
	for _, t := range w.texts {
		if _, ok := w.stamp[t]; !ok && bytes.Contains(w.buf[from:], []byte(t)) {
			w.stamp[t] = now
		}
	}
	return len(p), nil
}

func (w *stampWriter) at(texts ...string) (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range texts {
		if d, ok := w.stamp[t]; ok {
			return d, true
		}
	}
	return 0, false
}

// countingServer is imprint's HTTP server with a count of the chunk bytes
// it sent and of the time it spent per request: the server's view of what
// a boot fetched and how fast it could have.
type countingServer struct {
	h        http.Handler
	bytes    atomic.Int64
	requests atomic.Int64
	busy     atomic.Int64 // ns spent in the handler, summed
}

type countingRW struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingRW) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (s *countingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	begin := time.Now()
	// Chunks, and the web seed's ranges of signed pieces.
	counted := strings.Contains(r.URL.Path, "/chunks/") || strings.HasPrefix(r.URL.Path, "/swarm/data/")
	if counted {
		s.requests.Add(1)
		w = countingRW{w, &s.bytes}
	}
	s.h.ServeHTTP(w, r)
	if counted {
		s.busy.Add(int64(time.Since(begin)))
	}
}

func (s *countingServer) reset() (n, reqs int64, busy time.Duration) {
	return s.bytes.Swap(0), s.requests.Swap(0), time.Duration(s.busy.Swap(0))
}

// benchBoot is what one boot showed.
type benchBoot struct {
	// multiUser is QEMU's start to the report unit's first line: the unit
	// starts after multi-user.target and waits for the boot to finish.
	// systemd's own "Reached target" line is a second to earlier, but the
	// root server's console lines cut into it now and then.
	multiUser time.Duration
	reached   time.Duration // QEMU start to systemd's line, when seen whole before the report
	agentIn   time.Duration // QEMU start to "IMPRINT-AGENT: starting"
	rootIn    time.Duration // QEMU start to the root being there (ram: hash matched; ondemand: device up)
	fetchIn   time.Duration // ram: QEMU start to "fetching partition"
	agent     time.Duration // the agent's own start-to-root time
	fetched   int64         // the NBD server's last count (on demand)
	chunks    int64         // whole chunks in that count
	pieceB    int64         // of fetched, bytes of signed pieces (web seed)
	pieces    int64
	pieceReqs int64
	served    int64 // chunk bytes the HTTP server sent
	requests  int64
	busy      time.Duration // HTTP handler time for those requests
	kv        map[string]string
	console   string
}

// meminfo reads a KiB value from the report's meminfo line.
func (b benchBoot) meminfo(key string) int64 {
	for _, f := range strings.Fields(b.kv["meminfo"]) {
		if k, v, ok := strings.Cut(f, ":"); ok && k == key {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// rootReads is the root device's reads by the report (/sys/block stat:
// requests, bytes, ms the requests spent in flight summed): nbd0 for the
// diskless cases, vda for local (the agent loads nbd in every boot, so
// nbd0 is there, unread, in local and ram boots too).
func (b benchBoot) rootReads() (reqs, bytes, ms int64) {
	for _, dev := range []string{"nbd0-stat", "vda-stat"} {
		f := strings.Fields(b.kv[dev])
		if len(f) < 4 {
			continue
		}
		reqs, _ = strconv.ParseInt(f[0], 10, 64)
		sectors, _ := strconv.ParseInt(f[2], 10, 64)
		ms, _ = strconv.ParseInt(f[3], 10, 64)
		if reqs > 0 {
			return reqs, sectors * 512, ms
		}
	}
	return 0, 0, 0
}

func (b benchBoot) serverRSS() int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(b.kv["server-rss"]), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// bootTimed boots cfg until the Debian report unit is done and the guest
// powered off, with the console's times seen from the host.
func bootTimed(t *testing.T, what string, cfg qemu.Config, srv *countingServer) benchBoot {
	t.Helper()
	srv.reset()
	cfg.Args = append(cfg.Args, "-device", "virtio-rng-pci")
	sw := newStampWriter(append(multiUserTexts, fixture.DebianMarker+"state=", "IMPRINT-AGENT: starting",
		"IMPRINT-AGENT: fetching partition", "IMPRINT-AGENT: root sha256=", "IMPRINT-AGENT: root on demand")...)
	cfg.Console = sw
	vm := startVM(t, cfg)
	if err := vm.Expect(t.Context(),
		qemu.Marker{Text: "IMPRINT-AGENT: starting", Timeout: firmwareBoot},
		qemu.Marker{Text: fixture.DebianMarker + "state=", Timeout: debianBoot},
		qemu.Marker{Text: fixture.DebianDoneMarker, Timeout: nextMarkerTimeout}); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("%s: the guest should power off through systemd: %v", what, err)
	}
	b := benchBoot{kv: map[string]string{}, console: vm.Console()}
	b.served, b.requests, b.busy = srv.reset()
	b.multiUser, _ = sw.at(fixture.DebianMarker + "state=")
	if d, ok := sw.at(multiUserTexts...); ok && d <= b.multiUser {
		b.reached = d
	}
	b.agentIn, _ = sw.at("IMPRINT-AGENT: starting")
	b.fetchIn, _ = sw.at("IMPRINT-AGENT: fetching partition")
	b.rootIn, _ = sw.at("IMPRINT-AGENT: root sha256=", "IMPRINT-AGENT: root on demand")
	for _, l := range strings.Split(b.console, "\n") {
		if _, kv, ok := strings.Cut(strings.TrimRight(l, "\r"), fixture.DebianMarker); ok {
			k, v, _ := strings.Cut(kv, "=")
			b.kv[k] = v
		}
	}
	if b.kv["multi-user"] != "active" {
		t.Fatalf("%s: multi-user.target is %q", what, b.kv["multi-user"])
	}
	if m := agentRE.FindStringSubmatch(b.console); m != nil {
		b.agent = parseDur(m[1], m[2])
	}
	if all := ndbFetchedRe.FindAllStringSubmatch(b.console, -1); len(all) > 0 {
		b.fetched, _ = strconv.ParseInt(all[len(all)-1][1], 10, 64)
		b.chunks, _ = strconv.ParseInt(all[len(all)-1][2], 10, 64)
	}
	if all := ndbPiecesRe.FindAllStringSubmatch(b.console, -1); len(all) > 0 {
		b.pieceB, _ = strconv.ParseInt(all[len(all)-1][1], 10, 64)
		b.pieces, _ = strconv.ParseInt(all[len(all)-1][2], 10, 64)
		b.pieceReqs, _ = strconv.ParseInt(all[len(all)-1][3], 10, 64)
	}
	t.Logf("%s: multi-user after %v (systemd's line %v), agent up %v, root there %v (ram fetch began %v), agent start to root %v, fetched %d, served %d bytes in %d requests (%v in the handler), meminfo %s, server RSS %s kB; %s",
		what, b.multiUser.Round(10*time.Millisecond), b.reached.Round(10*time.Millisecond), b.agentIn.Round(10*time.Millisecond),
		b.rootIn.Round(10*time.Millisecond), b.fetchIn.Round(10*time.Millisecond), b.agent, b.fetched, b.served, b.requests,
		b.busy.Round(time.Millisecond), b.kv["meminfo"], b.kv["server-rss"], b.kv["analyze"])
	return b
}

// midpoint is the median, the mean of the middle two for an even count
// (median takes the upper one: with 2 boots a case, the slower).
func midpoint[T int64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// writeFiller writes n random bytes into dir as 128 MiB files.
func writeFiller(dir string, n int64, seed uint64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	const per = 128 << 20
	for i := 0; int64(i)*per < n; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("filler-%02d", i)))
		if err != nil {
			return err
		}
		_, err = io.CopyN(f, rng, min(per, n-int64(i)*per))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// rootOf is an image's root partition content and its name:version.
func rootOf(t *testing.T, store, name string) (*image.Content, string) {
	t.Helper()
	st, err := imstore.OpenDir(store)
	if err != nil {
		t.Fatal(err)
	}
	r, err := imstore.Resolve(t.Context(), st, name, "")
	if err != nil {
		t.Fatal(err)
	}
	rp, err := r.Manifest.RootPartition()
	if err != nil {
		t.Fatal(err)
	}
	return rp.Content, r.Manifest.Name + ":" + r.Manifest.Version
}

// The Debian 12 root booted three ways in the same VM kind (OVMF +
// systemd-boot from a disk, TCG, one CPU, 2 GiB): (a) from the local disk
// through the local entry, (b) diskless with imprint.root=ram, (c) diskless
// with imprint.root=ondemand, interleaved, IMPRINT_BENCH_REPS boots each;
// time from QEMU's start to systemd's multi-user line, bytes fetched, the
// root's RAM after boot. Then the same root plus 2 GiB of random filler:
// ram vs ondemand in a VM big enough for ram, and both in 1 GiB.
func TestDisklessBootTimes(t *testing.T) {
	if os.Getenv(DisklessBenchEnv) != "1" {
		t.Skip("a benchmark: run bench/diskless/run.sh (" + DisklessBenchEnv + "=1)")
	}
	requireQEMU(t)
	reps := 2
	if s := os.Getenv(DisklessBenchRepsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", DisklessBenchRepsEnv, s)
		}
		reps = n
	}
	// IMPRINT_BENCH_PARTS=small or =big runs one half (default both).
	parts := os.Getenv("IMPRINT_BENCH_PARTS")
	doSmall, doBig := parts != "big", parts != "small"
	ctx := t.Context()
	dir := t.TempDir()
	bin := filepath.Join(dir, "imprint")
	gb := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "../cmd/imprint")
	gb.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gb.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	begin := time.Now()
	root, err := fixture.BuildDebian(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	layoutFile := filepath.Join(dir, "layout")
	if err := os.WriteFile(layoutFile, []byte("esp esp 128M esp\nroot root-x86-64 auto image\nstate linux-generic 256M local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	build := func(name string, extra ...string) {
		imprint(t, append([]string{"build", "--store", store, "--name", name, "--rootfs", root.RootfsDir,
			"--layout", layoutFile, "--cmdline", fixture.DebianCmdline, "--agent-imprint", bin}, extra...)...)
	}
	build("debian")
	// IMPRINT_BENCH_CHUNK: one more image of the same root per chunk
	// size other than the default, for the small half's diskless cases.
	chunkSizes, err := benchChunkSizes(os.Getenv(DisklessBenchChunkEnv))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chunkSizes {
		if doSmall && c.image != "debian" {
			build(c.image, "--chunk-size", c.label)
		}
	}
	if doBig {
		if err := writeFiller(filepath.Join(root.RootfsDir, "opt/filler"), fillerBytes, 1); err != nil {
			t.Fatal(err)
		}
		build("debian-big")
	}
	if err := os.RemoveAll(root.RootfsDir); err != nil {
		t.Fatal(err)
	}
	small, smallRef := rootOf(t, store, "debian")
	// The small half alone builds no big image: its entries name the
	// small one and are not booted.
	big, bigRef := small, smallRef
	if doBig {
		big, bigRef = rootOf(t, store, "debian-big")
	}
	const chunk = image.DefaultChunkSize
	t.Logf("images built in %v: debian root %d bytes (%d data), debian-big root %d bytes (%d data)", time.Since(begin).Round(time.Second),
		small.Size, small.DataBytes(chunk), big.Size, big.DataBytes(chunk))
	refOf := map[string]string{"": smallRef} // chunk label -> image ref
	for i, c := range chunkSizes {
		if !doSmall {
			break
		}
		content, ref := rootOf(t, store, c.image)
		chunkSizes[i].dataBytes, chunkSizes[i].dataChunks = content.DataBytes(c.size), dataChunks(content)
		refOf[c.label] = ref
		t.Logf("chunk size %s: image %s, root %d bytes, %d data bytes in %d data chunks", c.label, ref, content.Size, chunkSizes[i].dataBytes, chunkSizes[i].dataChunks)
	}

	// The swarm routes on, as `imprint serve` has them by default: the
	// web seed serves the on-demand root's signed pieces.
	srv := &countingServer{h: &netboot.HTTP{Store: store, Decider: netboot.Static{}, SwarmTracker: &swarm.Tracker{}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	url := "http://10.0.2.2:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/"

	local := filepath.Join(dir, "local.img")
	imprint(t, "deploy", "--from", store, "--image", "debian", "--disk", local, "--yes", "--boot-timeout", "0", "--size", "2G", "--firmware", "uefi")
	laptop := filepath.Join(dir, "laptop.img")
	imprint(t, "deploy", "--from", store, "--image", "debian", "--disk", laptop, "--size", "2G", "--yes",
		"--boot-timeout", "0", "--firmware", "uefi", "--diskless-url", url)
	var menu bootloader.Menu
	if err := jsonUnmarshal(imprint(t, "boot", "list", "--disk", laptop, "--json"), &menu); err != nil {
		t.Fatal(err)
	}
	dl, ok := menu.Find("diskless")
	if !ok {
		t.Fatalf("no diskless entry: %+v", menu.Entries)
	}
	if !strings.Contains(dl.Options, "imprint.image="+smallRef) {
		t.Fatalf("the diskless entry's options %q do not name %s", dl.Options, smallRef)
	}
	t.Logf("diskless entry: %s", dl.Options)
	// dl-ondemand is read-ahead off; dl-ondemand-ra is imprint.readahead=
	// IMPRINT_BENCH_READAHEAD (default 8). The big root's cases take the
	// agent's default (agent.DefaultReadahead).
	ra := "8"
	if s := os.Getenv("IMPRINT_BENCH_READAHEAD"); s != "" {
		ra = s
	}
	bootEntries := []struct{ id, image, mode string }{{"big-ram", bigRef, "ram"}, {"big-ondemand", bigRef, "ondemand"}}
	for _, c := range chunkSizes {
		bootEntries = append(bootEntries, []struct{ id, image, mode string }{
			{chunkEntry("dl-ram", c.label), refOf[c.label], "ram"}, {chunkEntry("dl-ondemand", c.label), refOf[c.label], "ondemand imprint.readahead=0"},
			{chunkEntry("dl-ondemand-ra", c.label), refOf[c.label], "ondemand imprint.readahead=" + ra},
		}...)
	}
	// IMPRINT_BENCH_SLICE: dl-ondemand once per imprint.slice= value.
	var sliceCases []string
	for _, v := range strings.FieldsFunc(os.Getenv(DisklessBenchSliceEnv), func(r rune) bool { return r == ',' || r == ' ' }) {
		if _, err := agent.ParseCmdline("imprint.source=x imprint.slice=" + v); err != nil {
			t.Fatalf("%s: %v", DisklessBenchSliceEnv, err)
		}
		e := "dl-ondemand-s" + strings.ToLower(v)
		sliceCases = append(sliceCases, e)
		for _, c := range chunkSizes {
			bootEntries = append(bootEntries, struct{ id, image, mode string }{chunkEntry(e, c.label), refOf[c.label], "ondemand imprint.readahead=0 imprint.slice=" + v})
		}
	}
	for _, e := range bootEntries {
		opts := strings.Replace(dl.Options, "imprint.image="+smallRef, "imprint.image="+e.image, 1) + " imprint.root=" + e.mode
		imprint(t, "boot", "add", "--disk", laptop, "--id", e.id, "--title", e.id, "--kernel", dl.Linux,
			"--initrd", dl.Initrd[0], "--options", opts)
	}

	const mem = 2048
	// IMPRINT_BENCH_CPU is a comma-separated list of QEMU CPU models
	// (-cpu): the small half boots each case once per model in every
	// round, named case@model. Unset: QEMU's default (qemu64), one model.
	cpus := []string{""}
	if s := os.Getenv(DisklessBenchCPUEnv); s != "" {
		cpus = strings.Split(s, ",")
		for _, c := range cpus {
			if c == "" || strings.ContainsAny(c, " \t") {
				t.Fatalf("%s=%q: want QEMU CPU models separated by commas", DisklessBenchCPUEnv, s)
			}
		}
	}
	machine := func(disk string, memMiB int, cpu string) qemu.Config {
		return qemu.Config{Firmware: qemu.UEFI, MemoryMiB: memMiB, Disks: []qemu.Disk{{Path: disk}}, CPU: cpu,
			NICs: []qemu.NIC{{Netdev: "user", MAC: fixture.DebianMACNode17}}, Args: []string{"-boot", "order=c"}}
	}
	loads := []string{uptime()}
	runs := map[string][]benchBoot{}
	// IMPRINT_BENCH_NORAM=1 leaves dl-ram out of the small half (read-ahead
	// off vs on, sooner); IMPRINT_BENCH_READAHEAD=0 leaves dl-ondemand-ra
	// out (it would be dl-ondemand again).
	entries := []string{"local", "dl-ram", "dl-ondemand", "dl-ondemand-ra"}
	entries = slices.DeleteFunc(entries, func(e string) bool {
		return (e == "dl-ram" && os.Getenv("IMPRINT_BENCH_NORAM") == "1") || (e == "dl-ondemand-ra" && ra == "0")
	})
	// dl-ondemand's place, if a filter above ever leaves it out: the
	// slice cases go last then.
	if i := slices.Index(entries, "dl-ondemand"); len(sliceCases) > 0 && i >= 0 {
		entries = slices.Insert(slices.Delete(entries, i, i+1), i, sliceCases...)
	} else {
		entries = append(entries, sliceCases...)
	}
	type smallCase struct{ name, entry, cpu, chunk string }
	var cases []smallCase
	for _, e := range entries {
		for _, cs := range chunkSizes {
			if e == "local" && cs != chunkSizes[0] {
				continue // the local disk reads no chunks
			}
			for _, c := range cpus {
				name := e
				if e != "local" && cs.label != "" {
					name += "/" + cs.label
				}
				if len(cpus) > 1 {
					name += "@" + c
				}
				cases = append(cases, smallCase{name, chunkEntry(e, cs.label), c, cs.label})
			}
		}
	}
	chunkOf := map[string]benchChunk{}
	for _, c := range cases {
		for _, cs := range chunkSizes {
			if cs.label == c.chunk {
				chunkOf[c.name] = cs
			}
		}
	}
	var smallCases []string
	for _, c := range cases {
		smallCases = append(smallCases, c.name)
	}
	// caseOf is the name of entry e booted with the same CPU model as c
	// (and, for e other than local, the same chunk size).
	caseOf := func(e, c string) string {
		if e != "local" {
			if _, size, ok := strings.Cut(strings.Split(c, "@")[0], "/"); ok {
				e += "/" + size
			}
		}
		if _, model, ok := strings.Cut(c, "@"); ok {
			return e + "@" + model
		}
		return e
	}
	for i := 0; doSmall && i < reps; i++ {
		for _, c := range cases {
			disk := laptop
			if c.entry == "local" {
				disk = local
			} else {
				imprint(t, "boot", "default", c.entry, "--disk", laptop)
			}
			runs[c.name] = append(runs[c.name], bootTimed(t, fmt.Sprintf("%s boot %d", c.name, i+1), machine(disk, mem, c.cpu), srv))
		}
		loads = append(loads, uptime())
	}
	// The big root in RAM needs twice its size: /run's tmpfs gets half
	// the memory.
	bigMem := int((2*big.Size)>>20) + 1536
	for i := 0; doBig && i < reps; i++ {
		for _, c := range []string{"big-ram", "big-ondemand"} {
			imprint(t, "boot", "default", c, "--disk", laptop)
			runs[c] = append(runs[c], bootTimed(t, fmt.Sprintf("%s boot %d (%d MiB)", c, i+1, bigMem), machine(laptop, bigMem, cpus[0]), srv))
		}
		loads = append(loads, uptime())
	}
	var small1G benchBoot
	var ramFail string
	if doBig {
		imprint(t, "boot", "default", "big-ondemand", "--disk", laptop)
		small1G = bootTimed(t, "big-ondemand in 1 GiB", machine(laptop, 1024, cpus[0]), srv)
		loads = append(loads, uptime())
		imprint(t, "boot", "default", "big-ram", "--disk", laptop)
		ramFail = bootRAMTooSmall(t, machine(laptop, 1024, cpus[0]), srv)
		loads = append(loads, uptime())
	}

	med := func(c string, f func(benchBoot) time.Duration) time.Duration {
		var xs []time.Duration
		for _, b := range runs[c] {
			xs = append(xs, f(b))
		}
		return midpoint(xs)
	}
	medI := func(c string, f func(benchBoot) int64) int64 {
		var xs []int64
		for _, b := range runs[c] {
			xs = append(xs, f(b))
		}
		return midpoint(xs)
	}
	mu := func(b benchBoot) time.Duration { return b.multiUser }
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	smallSummary := func() {
		add("Debian 12 root: %d MiB partition, %d MiB data; VM: OVMF + systemd-boot, TCG, 1 CPU (-cpu %s), %d MiB; %d boots each, interleaved", small.Size>>20, small.DataBytes(chunk)>>20, cmp.Or(strings.Join(cpus, " / "), "QEMU's default"), mem, reps)
		for _, c := range smallCases {
			lm := med(caseOf("local", c), mu)
			add("%-12s multi-user median %v (%s) = %.2fx local; agent start to root %v; served %d MiB (%.0f%% of the root) in %d requests",
				c, r(med(c, mu)), list(runs[c], mu), float64(med(c, mu))/float64(lm), med(c, func(b benchBoot) time.Duration { return b.agent }).Round(time.Millisecond),
				medI(c, func(b benchBoot) int64 { return b.served })>>20, float64(medI(c, func(b benchBoot) int64 { return b.served }))*100/float64(small.Size),
				medI(c, func(b benchBoot) int64 { return b.requests }))
		}
		for _, c := range smallCases {
			add("%-12s phases (median, from QEMU start): agent up %v, root there %v, root to multi-user %v",
				c, r(med(c, func(b benchBoot) time.Duration { return b.agentIn })), r(med(c, func(b benchBoot) time.Duration { return b.rootIn })),
				r(med(c, func(b benchBoot) time.Duration { return b.multiUser - max(b.rootIn, b.agentIn) })))
		}
		for _, c := range smallCases {
			reqs := medI(c, func(b benchBoot) int64 { n, _, _ := b.rootReads(); return n })
			by := medI(c, func(b benchBoot) int64 { _, n, _ := b.rootReads(); return n })
			add("%-12s root device reads by the report (median): %d requests, %d MiB, %d KiB a request, %v in flight (summed)",
				c, reqs, by>>20, by>>10/max(reqs, 1), time.Duration(medI(c, func(b benchBoot) int64 { _, _, ms := b.rootReads(); return ms }))*time.Millisecond)
		}
		for _, c := range smallCases {
			add("%-12s after boot (median): MemAvailable %d MiB, Shmem %d MiB, Cached %d MiB, root server RSS %d MiB",
				c, medI(c, func(b benchBoot) int64 { return b.meminfo("MemAvailable") })>>10, medI(c, func(b benchBoot) int64 { return b.meminfo("Shmem") })>>10,
				medI(c, func(b benchBoot) int64 { return b.meminfo("Cached") })>>10, medI(c, benchBoot.serverRSS)>>10)
		}
		for _, c := range smallCases {
			if !strings.HasPrefix(c, "dl-ondemand") {
				continue
			}
			data := small.DataBytes(chunk)
			if cs := chunkOf[c]; cs.dataBytes > 0 {
				data = cs.dataBytes
			}
			read := medI(c, func(b benchBoot) int64 { _, n, _ := b.rootReads(); return n })
			add("%s: NBD server fetched %d MiB in %d whole chunks and %d signed pieces (%d MiB, %d range requests) (%.0f%% of the root's %d MiB, %.0f%% of its data; %.1fx the bytes read from the device) by the report", c,
				medI(c, func(b benchBoot) int64 { return b.fetched })>>20, medI(c, func(b benchBoot) int64 { return b.chunks }),
				medI(c, func(b benchBoot) int64 { return b.pieces }), medI(c, func(b benchBoot) int64 { return b.pieceB })>>20, medI(c, func(b benchBoot) int64 { return b.pieceReqs }),
				float64(medI(c, func(b benchBoot) int64 { return b.fetched }))*100/float64(small.Size), small.Size>>20,
				float64(medI(c, func(b benchBoot) int64 { return b.fetched }))*100/float64(data),
				float64(medI(c, func(b benchBoot) int64 { return b.fetched }))/float64(max(read, 1)))
		}
		// Each round, every case as a ratio to the local boot with the
		// same CPU model in that round.
		for i := 0; i < reps; i++ {
			var parts []string
			for _, c := range smallCases {
				l := caseOf("local", c)
				if c == l || i >= len(runs[c]) || i >= len(runs[l]) {
					continue
				}
				parts = append(parts, fmt.Sprintf("%s %.2fx", c, float64(runs[c][i].multiUser)/float64(runs[l][i].multiUser)))
			}
			var locals []string
			for _, m := range cpus {
				l := "local"
				if len(cpus) > 1 {
					l += "@" + m
				}
				if i < len(runs[l]) {
					locals = append(locals, fmt.Sprintf("%s %v", l, r(runs[l][i].multiUser)))
				}
			}
			add("round %d: %s; %s", i+1, strings.Join(locals, ", "), strings.Join(parts, ", "))
		}
		if len(runs["dl-ram"]) > 0 && len(runs["dl-ondemand"]) > 0 {
			add("root RAM after boot: ram = Shmem(ram) - Shmem(ondemand) = %d MiB; ondemand = server RSS %d MiB (cache bound %d MiB)",
				(medI("dl-ram", func(b benchBoot) int64 { return b.meminfo("Shmem") })-medI("dl-ondemand", func(b benchBoot) int64 { return b.meminfo("Shmem") }))>>10,
				medI("dl-ondemand", benchBoot.serverRSS)>>10, 64)
		}
	}
	bigSummary := func() {
		add("big root: %d MiB partition, %d MiB data; VM %d MiB", big.Size>>20, big.DataBytes(chunk)>>20, bigMem)
		for _, c := range []string{"big-ram", "big-ondemand"} {
			add("%-12s multi-user median %v (%s); root there %v; agent start to root %v; served %d MiB; MemAvailable %d MiB",
				c, r(med(c, mu)), list(runs[c], mu), r(med(c, func(b benchBoot) time.Duration { return b.rootIn })), med(c, func(b benchBoot) time.Duration { return b.agent }).Round(time.Millisecond),
				medI(c, func(b benchBoot) int64 { return b.served })>>20, medI(c, func(b benchBoot) int64 { return b.meminfo("MemAvailable") })>>10)
		}
		add("big ram / big ondemand: %.2fx", float64(med("big-ram", mu))/float64(med("big-ondemand", mu)))
		add("big-ondemand in 1024 MiB: multi-user after %v, served %d MiB, MemAvailable %d MiB, server RSS %d MiB",
			r(small1G.multiUser), small1G.served>>20, small1G.meminfo("MemAvailable")>>10, small1G.serverRSS()>>10)
		add("big-ram in 1024 MiB: %s", ramFail)
	}
	if doSmall {
		smallSummary()
	}
	if doBig {
		bigSummary()
	}
	add("load (uptime) before, after each round: %s", strings.Join(loads, " | "))
	t.Logf("DISKLESS BOOT TIMES:\n%s", strings.Join(lines, "\n"))
}

// bootRAMTooSmall boots a ram-mode root that cannot fit and says what
// happened: the agent's last words, or that it never got there.
func bootRAMTooSmall(t *testing.T, cfg qemu.Config, srv *countingServer) string {
	t.Helper()
	srv.reset()
	cfg.Args = append(cfg.Args, "-device", "virtio-rng-pci")
	begin := time.Now()
	vm := startVM(t, cfg)
	err := vm.Expect(t.Context(), qemu.Marker{Text: "IMPRINT-AGENT: starting", Timeout: firmwareBoot},
		qemu.Marker{Text: fixture.DebianMarker + "state=", Timeout: 8 * time.Minute})
	took := time.Since(begin).Round(time.Second)
	vm.Kill()
	served, _, _ := srv.reset()
	console := vm.Console()
	said := grepLines(console, "IMPRINT-AGENT")
	for _, w := range []string{"Out of memory", "oom-kill", "Kernel panic", "No space left", "does not fit in RAM"} {
		if l := grepLines(console, w); l != "" {
			said += "\n" + l
		}
	}
	t.Logf("big-ram in 1 GiB: %v after %v, %d MiB served; console:\n%s", err, took, served>>20, said)
	if err == nil {
		return fmt.Sprintf("BOOTED (after %v)", took)
	}
	last := strings.Split(strings.TrimSpace(said), "\n")
	return fmt.Sprintf("did not boot (%v after QEMU start, %d MiB served): %s", took, served>>20, strings.TrimSpace(last[len(last)-1]))
}

func uptime() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}

// benchChunk is one chunk size of IMPRINT_BENCH_CHUNK and its image of
// the small Debian root.
type benchChunk struct {
	label      string // as given ("256K"); "" for the default image alone
	size       int64
	image      string // image name in the bench's store
	dataBytes  int64  // the root's non-zero chunks' bytes at this size
	dataChunks int64
}

// benchChunkSizes reads IMPRINT_BENCH_CHUNK: chunk sizes separated by
// commas or spaces. Empty: the default image alone, unlabelled. The
// default size keeps the image named "debian" (the one deployed for the
// local boot); the others get "debian-c<size>".
func benchChunkSizes(s string) ([]benchChunk, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	if len(fields) == 0 {
		return []benchChunk{{size: image.DefaultChunkSize, image: "debian"}}, nil
	}
	var out []benchChunk
	for _, f := range fields {
		n, err := layout.ParseSize(f)
		if err != nil || n <= 0 || n&(n-1) != 0 {
			return nil, fmt.Errorf("%s=%q: %q is not a chunk size (a power of two, e.g. 256K)", DisklessBenchChunkEnv, s, f)
		}
		for _, o := range out {
			if o.size == n {
				return nil, fmt.Errorf("%s=%q: %q given twice", DisklessBenchChunkEnv, s, f)
			}
		}
		name := "debian"
		if n != image.DefaultChunkSize {
			name = "debian-c" + strings.ToLower(f)
		}
		out = append(out, benchChunk{label: f, size: n, image: name})
	}
	return out, nil
}

// chunkEntry is the boot entry id of diskless entry e for chunk label
// size ("" keeps e).
func chunkEntry(e, size string) string {
	if e == "local" || size == "" {
		return e
	}
	return e + "-c" + strings.ToLower(size)
}

// dataChunks is how many of c's chunks are not all zeros.
func dataChunks(c *image.Content) int64 {
	var n int64
	for _, sum := range c.Chunks {
		if sum != image.ZeroChunk {
			n++
		}
	}
	return n
}
