// Package netboot is the network side of imprint: an HTTP server for stores
// and boot files, generated iPXE scripts, and per-machine decisions; DHCP
// (netboot/dhcp) and TFTP (netboot/tftp) hand machines over to it.
package netboot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/chunkcache"
	"github.com/imprint-dev/imprint/store"
)

// Mode is what a machine does when it netboots.
type Mode string

const (
	// Diskless runs the image from RAM; the local disk is not touched.
	Diskless Mode = "diskless"
	// Install deploys the image onto the machine's disk, then reboots.
	Install Mode = "install"
	// Local sends the machine back to its own disk (iPXE exits).
	Local Mode = "local"
)

// IdentityPath is where a server started with --identity hands out the
// site's identity map (and IdentityPath + ".minisig" its signature).
const IdentityPath = "/identity/identity.conf"

// Decision is what one machine gets.
type Decision struct {
	Image       string // NAME or NAME:VERSION
	Mode        Mode
	InstallDisk string // for Install, e.g. /dev/vda
	Cmdline     string // extra kernel arguments
}

// Decider chooses per machine, by MAC address. ok=false: not ours to boot.
type Decider interface {
	Decide(mac net.HardwareAddr) (d Decision, ok bool)
}

// Static gives every machine the same decision, except those in PerMAC.
type Static struct {
	Default Decision
	PerMAC  map[string]Decision // key: lower-case "aa:bb:cc:dd:ee:ff"
}

// Decide implements Decider.
func (s Static) Decide(mac net.HardwareAddr) (Decision, bool) {
	if d, ok := s.PerMAC[strings.ToLower(mac.String())]; ok {
		return d, d.Image != ""
	}
	return s.Default, s.Default.Image != ""
}

// HTTP serves one store read-only, the boot files of its images, and iPXE
// scripts. Every path it answers is built from validated names: nothing
// else under the store, nothing outside it.
type HTTP struct {
	Store string // store directory, served as its files
	// Disk, when set, is served instead of Store: any store.Source, in
	// practice a deployed disk (ondisk.DiskSource), whose chunks are
	// produced and checked on each request.
	Disk store.Source
	// Trust, when set, limits what is served and booted to images signed
	// by one of its keys. TrustKeys (comma-separated key text) is passed
	// to netbooted agents as imprint.trust= so they check it too.
	Trust     *image.Trust
	TrustKeys string
	// Pins name, per image, the version "newest" means (NAME -> VERSION):
	// netboots and syncs that ask for NAME get it, and the index lists no
	// later version, so a release reaches canaries (which name it) before
	// the fleet.
	Pins    map[string]string
	Decider Decider
	// Agent is the agent initramfs to serve for images that carry none.
	Agent string
	// Public is the base URL machines reach this server at, e.g.
	// http://10.0.0.1:8080/ (scripts and kernel command lines carry it).
	Public string
	// Console is the kernel console argument for booted machines.
	Console string
	Logf    func(string, ...any)
	// BootCache bounds the bytes of decoded chunks of boot files and
	// loaders kept between requests; 0 is DefaultBootCache.
	BootCache int64
	// SwarmTracker, when set, turns on the swarm routes (netboot/swarm.go).
	SwarmTracker *swarm.Tracker
	// SwarmPeer, with SwarmTracker, is the server's seeding peer: each
	// image version a node asks for is seeded on it (see swarm.Seeder).
	// CloseSwarm stops it.
	SwarmPeer *swarm.Node
	// Fleet, when set, records the machines' requests and turns on the
	// status page at / and /status.json (docs/status.md).
	Fleet *Fleet
	// Identity is the site's identity map (serve --identity), handed out
	// at IdentityPath with its signature IdentitySig beside it; agents
	// take it instead of their image's only when the signature verifies
	// under their trusted keys.
	Identity, IdentitySig []byte

	swarmOnce   sync.Once
	swarmSeed   *swarm.WebSeed
	swarmSeeder *swarm.Seeder
	once        sync.Once
	dec         *image.Decoder
	decErr      error
	chunks      *chunkcache.Cache[string]
	mu          sync.Mutex
	resolved    map[string]*resolvedEntry // by NAME:VERSION, "NAME:" for the newest
	expiredSaid time.Time                 // when an expired identity map was last said (under mu)
}

func (h *HTTP) logf(format string, a ...any) {
	if h.Logf != nil {
		h.Logf(format, a...)
	}
}

// ServeHTTP implements http.Handler.
func (h *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.record(w, r, h.serve)
}

func (h *HTTP) serve(w http.ResponseWriter, r *http.Request) {
	if !getOrHead(w, r) {
		return
	}
	p := r.URL.Path
	if len(p) > 512 || strings.ContainsAny(p, "\\\x00") {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	switch {
	case p == "/" && h.Fleet != nil:
		h.statusHTML(w, r)
	case p == "/status.json" && h.Fleet != nil:
		h.statusJSON(w, r)
	case p == "/boot.ipxe":
		h.script(w, r)
	case p == "/index.json":
		if h.Disk != nil || h.Trust != nil || len(h.Pins) > 0 {
			// Under trust the index is made, not the store's file: it
			// lists only trusted versions, which clients pick from; a
			// pinned image's later versions are left out.
			h.index(w, r)
			return
		}
		h.file(w, r, "index.json", IndexCache, "")
	case len(parts) == 4 && parts[0] == "images" && (parts[3] == "manifest.json" || parts[3] == "manifest.json"+image.SignatureSuffix || parts[3] == store.LayoutFile):
		if image.ValidName(parts[1]) != nil || image.ValidName(parts[2]) != nil {
			http.NotFound(w, r)
			return
		}
		if !h.trusted(w, r, parts[1], parts[2]) {
			return
		}
		if parts[3] == "manifest.json" {
			h.offerSwarm(r.Context(), parts[1], parts[2])
		}
		if h.Disk != nil {
			h.fromSource(w, r, parts[1], parts[2], parts[3])
			return
		}
		h.file(w, r, path.Join("images", parts[1], parts[2], parts[3]), versionFileCache(parts[3]), "")
	case len(parts) == 3 && parts[0] == "chunks" && isHex(parts[2], 64) && parts[1] == parts[2][:2]:
		if h.Disk != nil {
			h.chunk(w, r, parts[2])
			return
		}
		h.file(w, r, path.Join("chunks", parts[1], parts[2]), ImmutableCache, `"`+parts[2]+`"`)
	case parts[0] == "swarm":
		h.serveSwarm(w, r, parts)
	case p == IdentityPath || p == IdentityPath+image.SignatureSuffix:
		b := h.Identity
		if p != IdentityPath {
			b = h.IdentitySig
		}
		if b == nil {
			http.NotFound(w, r)
			return
		}
		if p == IdentityPath {
			h.sayIfExpired()
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	case len(parts) == 4 && parts[0] == "boot":
		h.bootFile(w, r, parts[1], parts[2], parts[3])
	default:
		http.NotFound(w, r)
	}
}

// What caches in front of the server (nginx proxy_cache, squid; see
// dist/nginx-imprint-cache.conf) are told. A chunk is named by its hash and
// a version is never rewritten, so both are immutable; what says which
// version is newest (index.json) changes with every build, so caches keep
// it a few seconds and then revalidate it by its ETag.
const (
	ImmutableCache = "public, max-age=31536000, immutable"
	IndexCache     = "public, max-age=5"
	// A signature can be added to a version after it is built, and a
	// layout is advice beside it: short-lived, revalidated by ETag.
	SidecarCache = "public, max-age=60"
)

// versionFileCache is the Cache-Control of a file under images/NAME/VERSION/.
func versionFileCache(file string) string {
	if file == "manifest.json" {
		return ImmutableCache
	}
	return SidecarCache
}

// maxHashedFile bounds the store files whose ETag is their content's hash
// (index, manifests, layouts, signatures); chunks are named by theirs.
const maxHashedFile = 16 << 20

// contentETag is a strong validator for b: its SHA-256.
func contentETag(b []byte) string {
	s := sha256.Sum256(b)
	return `"` + hex.EncodeToString(s[:]) + `"`
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// file serves a store file through os.Root, which refuses symlinks and
// ".." that lead out of the store.
func (h *HTTP) file(w http.ResponseWriter, r *http.Request, rel, cache, etag string) {
	root, err := os.OpenRoot(h.Store)
	if err != nil {
		h.logf("http: store %s: %v", h.Store, err)
		http.Error(w, "store unavailable", http.StatusInternalServerError)
		return
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			h.logf("http: %s: %v", rel, err)
		}
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	var content io.ReadSeeker = f
	if etag == "" && st.Size() <= maxHashedFile {
		// Small and mutable-looking: hash it, so a cache revalidates with
		// If-None-Match and gets 304 instead of the body.
		b, err := io.ReadAll(io.LimitReader(f, maxHashedFile+1))
		if err != nil {
			h.logf("http: %s: %v", rel, err)
			http.Error(w, "store unavailable", http.StatusInternalServerError)
			return
		}
		etag, content = contentETag(b), bytes.NewReader(b)
	}
	w.Header().Set("Cache-Control", cache)
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if strings.HasSuffix(rel, ".json") {
		w.Header().Set("Content-Type", "application/json")
	}
	http.ServeContent(w, r, "", st.ModTime(), content)
}

// bootFile serves an image's kernel, initrd, agent initramfs or a loader
// (by its name in the manifest) straight from its chunks, each checked as
// it is read, so a machine can boot without the store holding loose files,
// and a rack booting at once shares one decoded copy (newChunkCache).
func (h *HTTP) bootFile(w http.ResponseWriter, r *http.Request, name, version, file string) {
	if image.ValidName(name) != nil || image.ValidName(version) != nil {
		http.NotFound(w, r)
		return
	}
	src, err := h.source()
	if err != nil {
		http.Error(w, "store unavailable", http.StatusInternalServerError)
		return
	}
	res, err := h.resolve(r.Context(), src, name, version)
	if errors.Is(err, image.ErrUntrusted) {
		h.logf("http: boot file %s:%s/%s refused: %v", name, version, file, err)
		http.Error(w, "image not signed by a trusted key", http.StatusForbidden)
		return
	}
	if errors.Is(err, image.ErrFormat) {
		// Say why: a 404 would send the admin looking for a missing file.
		h.logf("http: boot file %s:%s/%s: %v", name, version, file, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if err != nil {
		http.NotFound(w, r)
		return
	}
	b := res.Manifest.Boot
	var c *image.Content
	limit := int64(image.MaxBootFile)
	switch file {
	case "vmlinuz":
		if b != nil {
			c = b.Kernel
		}
	case "initrd.img":
		if b != nil {
			c = b.Initrd
		}
	case "agent.img":
		if b != nil && b.Agent != nil {
			c = b.Agent
		} else if h.Agent != "" {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFile(w, r, h.Agent)
			return
		}
	default:
		c, limit = res.Manifest.Loaders[file], image.MaxLoaderSize
	}
	if c == nil {
		http.NotFound(w, r)
		return
	}
	rd, err := h.open(r.Context(), src, res.Manifest.ChunkSize, c, limit, file)
	if err != nil {
		h.logf("http: boot file %s:%s/%s: %v", name, version, file, err)
		msg := "boot file unavailable"
		if errors.Is(err, ErrTooLarge) {
			msg = err.Error()
		}
		http.Error(w, msg, http.StatusInternalServerError)
		return
	}
	defer rd.Close()
	w.Header().Set("ETag", `"`+c.SHA256+`"`)
	w.Header().Set("Cache-Control", ImmutableCache)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, rd)
}

// ErrNoLoader says the image carries no loader of that name.
var ErrNoLoader = errors.New("the image carries no such loader")

// Loader is loader name of image img (NAME or NAME:VERSION), read from its
// chunks, each checked against the image's manifest, which must pass
// h.Trust. The caller closes it.
func (h *HTTP) Loader(ctx context.Context, img, name string) (io.ReadSeekCloser, error) {
	src, err := h.source()
	if err != nil {
		return nil, err
	}
	n, v, _ := strings.Cut(img, ":")
	res, err := h.resolve(ctx, src, n, v)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img, err)
	}
	c := res.Manifest.Loaders[name]
	if c == nil {
		return nil, fmt.Errorf("image %s: %w: %s", img, ErrNoLoader, name)
	}
	return h.open(ctx, src, res.Manifest.ChunkSize, c, image.MaxLoaderSize, name)
}

func (h *HTTP) init() {
	h.once.Do(func() {
		h.dec, h.decErr = image.NewDecoder()
		h.chunks = newChunkCache(h.BootCache)
	})
}

// open gives a reader over content c, refusing one that claims more than
// limit bytes before anything is read: a manifest's size is a claim, and
// streaming 1 TiB of "zero" chunks would hold a client and a connection for
// as long as it lasts.
func (h *HTTP) open(ctx context.Context, src store.Source, chunkSize int64, c *image.Content, limit int64, label string) (*contentReader, error) {
	if c.Size > limit || c.Size < 0 {
		return nil, fmt.Errorf("%s: %w: the manifest says %d bytes, a %s may have at most %d", label, ErrTooLarge, c.Size, map[bool]string{true: "loader", false: "boot file"}[limit == image.MaxLoaderSize], limit)
	}
	if chunkSize <= 0 || int64(len(c.Chunks)) != (c.Size+chunkSize-1)/chunkSize {
		return nil, fmt.Errorf("%s: %w: %d chunks of %d bytes do not make %d bytes", label, image.ErrFormat, len(c.Chunks), chunkSize, c.Size)
	}
	h.init()
	if h.decErr != nil {
		return nil, h.decErr
	}
	load := func(ctx context.Context, sum string, n int64) ([]byte, error) {
		stored, err := src.Chunk(ctx, sum)
		if err != nil {
			return nil, err
		}
		return h.dec.Decode(stored, sum, n, nil)
	}
	r := &contentReader{ctx: ctx, cache: h.chunks, load: load, content: c, chunkSize: chunkSize}
	// The first chunk is read now, so a missing or drifted one is an
	// error status, not a response cut short after its headers (a later
	// one can only cut it short; Content-Length tells the client).
	if _, err := r.Read(nil); err != nil && err != io.EOF {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	return r, nil
}

// script answers iPXE with what this machine boots.
func (h *HTTP) script(w http.ResponseWriter, r *http.Request) {
	mac, err := net.ParseMAC(r.URL.Query().Get("mac"))
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		fmt.Fprint(w, "#!ipxe\necho imprint: no or bad ?mac= in the script URL\nexit 1\n")
		return
	}
	s, err := h.Script(r.Context(), mac)
	if err != nil {
		h.logf("http: script for %s: %v", mac, err)
		fmt.Fprintf(w, "#!ipxe\necho imprint: %s\nsleep 10\nexit 1\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	io.WriteString(w, s)
}

// Script is the iPXE script for one machine. Debian's iPXE on UEFI needs
// initrd=<name> on the kernel command line, so the initrd is named.
func (h *HTTP) Script(ctx context.Context, mac net.HardwareAddr) (string, error) {
	d, ok := h.Decider.Decide(mac)
	if !ok {
		return "#!ipxe\necho imprint: this machine is not ours to boot\nexit 1\n", nil
	}
	if d.Mode == Local {
		return "#!ipxe\necho imprint: booting from the local disk\nexit 0\n", nil
	}
	p, err := h.Plan(ctx, d)
	if err != nil {
		return "", err
	}
	base := strings.TrimRight(h.Public, "/")
	args := append([]string{"initrd=agent.img"}, p.Args...)
	return fmt.Sprintf("#!ipxe\necho imprint: %s %s (%s)\nkernel %s/%s %s\ninitrd --name agent.img %s/%s\nboot\n",
		d.Mode, p.Image(), mac, base, p.Kernel, strings.Join(args, " "), base, p.Agent), nil
}

// Sentinel errors of Plan.
var (
	ErrNoKernel = errors.New("the image carries no kernel")
	ErrNoAgent  = errors.New("the image carries no agent initramfs and the server has none for it")
)

// BootPlan is what a machine given a Decision boots from this server: the
// image's kernel and the agent initramfs, and the kernel command line that
// points the agent back here. Netbooted machines get it as an iPXE script;
// `imprint vm --netboot` boots it directly.
type BootPlan struct {
	Name, Version string
	// Kernel and Agent are paths under the server's base URL.
	Kernel, Agent string
	// Args is the kernel command line: the agent's arguments, the console,
	// the image's own (root= left out) and the decision's extra ones.
	Args []string

	noAgent bool
}

// CheckAgent says, wrapping ErrNoAgent, when the server has no agent to
// serve at p.Agent: the image carries none and HTTP.Agent is empty. (An
// iPXE script is still handed out then; iPXE reports the missing file.)
func (p *BootPlan) CheckAgent() error {
	if p.noAgent {
		return fmt.Errorf("image %s: %w", p.Image(), ErrNoAgent)
	}
	return nil
}

// Image is the planned image as NAME:VERSION.
func (p *BootPlan) Image() string { return p.Name + ":" + p.Version }

// Plan resolves decision d's image (under h.Trust and h.Pins, as netboots
// see it) and says how it boots from h.Public. An image that is not there
// is an error wrapping store.ErrNotFound; one without a kernel wraps
// ErrNoKernel (see also BootPlan.CheckAgent).
func (h *HTTP) Plan(ctx context.Context, d Decision) (*BootPlan, error) {
	src, err := h.source()
	if err != nil {
		return nil, err
	}
	name, version, _ := strings.Cut(d.Image, ":")
	res, err := h.resolve(ctx, src, name, version)
	if err != nil {
		return nil, err
	}
	m := res.Manifest
	if m.Boot == nil || m.Boot.Kernel == nil {
		return nil, fmt.Errorf("image %s:%s: %w", m.Name, m.Version, ErrNoKernel)
	}
	base := strings.TrimRight(h.Public, "/")
	boot := "boot/" + m.Name + "/" + m.Version
	args := []string{"imprint.source=" + base + "/", "imprint.image=" + m.Name + ":" + m.Version}
	if d.Mode == Install {
		args = append(args, "imprint.install="+d.InstallDisk)
	}
	if h.TrustKeys != "" {
		args = append(args, "imprint.trust="+h.TrustKeys)
	}
	if h.Console != "" {
		args = append(args, h.Console)
	}
	args = append(args, strings.Fields(agentCmdline(m.Boot.Cmdline))...)
	args = append(args, strings.Fields(d.Cmdline)...)
	return &BootPlan{Name: m.Name, Version: m.Version, Kernel: boot + "/vmlinuz", Agent: boot + "/agent.img", Args: args,
		noAgent: m.Boot.Agent == nil && h.Agent == ""}, nil
}

// agentCmdline keeps the image's command line except root=, which the
// agent replaces.
func agentCmdline(c string) string {
	var keep []string
	for _, w := range strings.Fields(c) {
		if !strings.HasPrefix(w, "root=") && !strings.HasPrefix(w, "initrd=") {
			keep = append(keep, w)
		}
	}
	return strings.Join(keep, " ")
}

func (h *HTTP) source() (store.Source, error) {
	if h.Disk != nil {
		return h.Disk, nil
	}
	return store.OpenDir(h.Store)
}

// trusted answers 403 for a manifest not signed by a trusted key, so a
// server started with --trust never hands one out.
func (h *HTTP) trusted(w http.ResponseWriter, r *http.Request, name, version string) bool {
	if h.Trust == nil {
		return true
	}
	src, err := h.source()
	if err == nil {
		if _, err = h.resolve(r.Context(), src, name, version); errors.Is(err, store.ErrNotFound) {
			http.NotFound(w, r)
			return false
		}
	}
	if err != nil {
		h.logf("http: %s:%s refused: %v", name, version, err)
		http.Error(w, "image not signed by a trusted key", http.StatusForbidden)
		return false
	}
	return true
}

func (h *HTTP) index(w http.ResponseWriter, r *http.Request) {
	src, err := h.source()
	if err != nil {
		h.logf("http: index: %v", err)
		http.Error(w, "store unavailable", http.StatusInternalServerError)
		return
	}
	idx, err := h.visibleIndex(r.Context(), src)
	if errors.Is(err, store.ErrNotYet) {
		tooEarly(w, "the index")
		return
	}
	if err != nil {
		h.logf("http: index: %v", err)
		http.Error(w, "index unavailable", http.StatusInternalServerError)
		return
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Cache-Control", IndexCache)
	w.Header().Set("ETag", contentETag(b))
	w.Header().Set("Content-Type", "application/json")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

func (h *HTTP) fromSource(w http.ResponseWriter, r *http.Request, name, version, file string) {
	var b []byte
	var err error
	switch file {
	case "manifest.json":
		b, err = h.Disk.Manifest(r.Context(), name, version)
	case store.LayoutFile:
		err = fmt.Errorf("%s: %w", file, store.ErrNotFound)
		if ls, ok := h.Disk.(store.LayoutSource); ok {
			b, err = ls.Layout(r.Context(), name, version)
		}
	default:
		b, err = h.Disk.Signature(r.Context(), name, version)
	}
	if errors.Is(err, store.ErrNotYet) {
		tooEarly(w, file)
		return
	}
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			h.logf("http: %s:%s/%s: %v", name, version, file, err)
		}
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", versionFileCache(file))
	w.Header().Set("ETag", contentETag(b))
	w.Header().Set("Content-Type", "application/octet-stream")
	if file == "manifest.json" || file == store.LayoutFile {
		w.Header().Set("Content-Type", "application/json")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

// chunk serves a chunk the source makes on request. A chunk whose bytes
// no longer match its name is refused with 409 Conflict and logged: the
// client takes it from another source, and the admin learns the disk
// drifted.
func (h *HTTP) chunk(w http.ResponseWriter, r *http.Request, sum string) {
	b, err := h.Disk.Chunk(r.Context(), sum)
	switch {
	case errors.Is(err, store.ErrNotFound):
		http.NotFound(w, r)
		return
	case errors.Is(err, store.ErrNotYet):
		tooEarly(w, "chunk "+sum)
		return
	case errors.Is(err, image.ErrChecksum):
		h.logf("http: REFUSED drifted chunk: %v", err)
		http.Error(w, "chunk "+sum+" drifted on this server's disk; not served", http.StatusConflict)
		return
	case err != nil:
		h.logf("http: chunk %s: %v", sum, err)
		http.Error(w, "chunk unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", ImmutableCache)
	w.Header().Set("ETag", `"`+sum+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

// tooEarly answers for a disk still being deployed: 425 Too Early tells the
// client to come back for it (store.HTTP waits), not to give up.
func tooEarly(w http.ResponseWriter, what string) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, what+" is not written here yet", http.StatusTooEarly)
}

// getOrHead lets GET and HEAD through and answers anything else 405 with
// the Allow header: every route is read-only.
func getOrHead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "read-only: only GET and HEAD", http.StatusMethodNotAllowed)
	return false
}
