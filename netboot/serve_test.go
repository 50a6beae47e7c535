package netboot

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

// bootStore makes a store holding image node:VERSION with the given kernel
// and initrd, created at the given time, and returns the store.
func bootStore(t *testing.T, root, version string, created time.Time, kernel, initrd []byte) *store.Dir {
	t.Helper()
	st, err := store.CreateDir(root)
	if err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) *image.Content {
		c, _, err := image.StoreContent(context.Background(), st, bytes.NewReader(b), int64(len(b)), 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	m := &image.Manifest{Format: image.FormatVersion, Name: "node", Version: version, Created: created, ChunkSize: 1 << 20,
		Partitions: []image.Partition{
			{Name: "root", Type: layout.TypeRootX86_64, Content: put(make([]byte, 4096))},
		},
		Boot:    &image.Boot{Kernel: put(kernel), Initrd: put(initrd), Cmdline: "console=ttyS0"},
		Loaders: map[string]*image.Content{image.LoaderIPXEEFI: put([]byte("MZ the image's iPXE"))},
	}
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	return st
}

func get(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestConcurrentBootFileGETsShareOneCopy: a rack powering on asks for the
// same initrd at once. Each request used to assemble its own copy (50 GETs
// of 40 MB: 3.8 GB); now the chunks are decoded once and streamed, so the
// heap stays under twice the file plus a fixed amount, and every client
// gets the same bytes, ranges and HEAD included.
func TestConcurrentBootFileGETsShareOneCopy(t *testing.T) {
	const size, clients = 16 << 20, 30
	initrd := make([]byte, size)
	rand.Read(initrd)
	root := t.TempDir()
	bootStore(t, root, "1", time.Now(), []byte("a kernel"), initrd)
	h := &HTTP{Store: root, Decider: Static{Default: Decision{Image: "node", Mode: Diskless}}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	want := sha256.Sum256(initrd)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(srv.URL + "/boot/node/1/initrd.img")
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			hs := sha256.New()
			n, err := io.Copy(hs, resp.Body)
			if err != nil || resp.StatusCode != 200 || n != size || !bytes.Equal(hs.Sum(nil), want[:]) {
				errs <- fmt.Errorf("status %d, %d bytes, err %v, same bytes %v", resp.StatusCode, n, err, bytes.Equal(hs.Sum(nil), want[:]))
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	grew := int64(peak.Load()) - int64(base)
	bound := int64(2*size + 32<<20)
	t.Logf("%d concurrent GETs of a %d MiB initrd: heap grew by %d MiB at most (bound %d MiB)", clients, size>>20, grew>>20, bound>>20)
	if grew > bound {
		t.Errorf("heap grew by %d MiB for %d clients of a %d MiB file; want at most %d MiB", grew>>20, clients, size>>20, bound>>20)
	}

	// Ranges across chunk boundaries and HEAD still work.
	for _, rg := range [][2]int{{0, 9}, {1<<20 - 5, 1<<20 + 5}, {3<<20 - 1, 5<<20 + 1}, {size - 7, size - 1}} {
		resp, b := get(t, http.MethodGet, srv.URL+"/boot/node/1/initrd.img", "Range", fmt.Sprintf("bytes=%d-%d", rg[0], rg[1]))
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, initrd[rg[0]:rg[1]+1]) {
			t.Errorf("range %v: %d, %d bytes, same %v", rg, resp.StatusCode, len(b), bytes.Equal(b, initrd[rg[0]:rg[1]+1]))
		}
	}
	resp, b := get(t, http.MethodHead, srv.URL+"/boot/node/1/initrd.img")
	if resp.StatusCode != 200 || resp.ContentLength != size || len(b) != 0 {
		t.Errorf("HEAD: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
}

// TestBootFileClaimingATerabyteIsRefused: a manifest whose kernel claims
// 1 TiB of zero chunks made one GET allocate 1 TiB and killed the server.
// Boot files above image.MaxBootFile are refused with a clear error before
// anything is read; one at the limit is streamed (HEAD gives its size).
func TestBootFileClaimingATerabyteIsRefused(t *testing.T) {
	root := t.TempDir()
	st := bootStore(t, root, "1", time.Now(), []byte("a kernel"), []byte("an initrd"))
	zeros := func(size, chunk int64) *image.Content {
		c := &image.Content{Size: size, SHA256: strings.Repeat("0", 64)}
		for i := int64(0); i < size; i += chunk {
			c.Chunks = append(c.Chunks, image.ZeroChunk)
		}
		return c
	}
	for _, tc := range []struct {
		version string
		kernel  *image.Content
	}{{"huge", zeros(1<<40, 64<<20)}, {"limit", zeros(image.MaxBootFile, 64<<20)}} {
		m := &image.Manifest{Format: image.FormatVersion, Name: "node", Version: tc.version, Created: time.Now(), ChunkSize: 64 << 20,
			Partitions: []image.Partition{},
			Boot:       &image.Boot{Kernel: tc.kernel}}
		raw, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(root, "images", "node", tc.version)
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, "manifest.json"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_ = st
	h := &HTTP{Store: root, Decider: Static{Default: Decision{Image: "node", Mode: Diskless}}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, b := get(t, http.MethodGet, srv.URL+"/boot/node/huge/vmlinuz")
	if resp.StatusCode < 400 || !strings.Contains(string(b), "1073741824") {
		t.Errorf("1 TiB kernel: %d %q; want a refusal naming the limit", resp.StatusCode, b)
	}
	resp, _ = get(t, http.MethodHead, srv.URL+"/boot/node/limit/vmlinuz")
	if resp.StatusCode != 200 || resp.ContentLength != image.MaxBootFile {
		t.Errorf("kernel at the limit: HEAD %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	// A client reading a little of it holds no more than the chunk it is in.
	resp, b = get(t, http.MethodGet, srv.URL+"/boot/node/limit/vmlinuz", "Range", "bytes=1000-1999")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, make([]byte, 1000)) {
		t.Errorf("range of zeros: %d, %d bytes", resp.StatusCode, len(b))
	}
}

// countingSource counts manifest reads.
type countingSource struct {
	store.Source
	manifests atomic.Int64
}

func (c *countingSource) Manifest(ctx context.Context, name, version string) ([]byte, error) {
	c.manifests.Add(1)
	return c.Source.Manifest(ctx, name, version)
}

// TestBootRequestsDoNotReparseTheManifest: every /boot request used to
// read and parse the manifest again; resolved manifests are now kept, and a
// store directory's change (a new build) is seen at once.
func TestBootRequestsDoNotReparseTheManifest(t *testing.T) {
	root := t.TempDir()
	bootStore(t, root, "1", time.Now().Add(-time.Hour), []byte("a kernel"), []byte("an initrd"))
	dir, _ := store.OpenDir(root)
	src := &countingSource{Source: dir}
	h := &HTTP{Disk: src, Decider: Static{Default: Decision{Image: "node", Mode: Diskless}}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for i := 0; i < 20; i++ {
		if resp, b := get(t, http.MethodGet, srv.URL+"/boot/node/1/vmlinuz"); resp.StatusCode != 200 || string(b) != "a kernel" {
			t.Fatalf("kernel: %d %q", resp.StatusCode, b)
		}
	}
	if n := src.manifests.Load(); n > 1 {
		t.Errorf("20 kernel requests read the manifest %d times; want once", n)
	}

	// A store directory: a new version is the newest at once.
	h = &HTTP{Store: root, Public: "http://10.0.0.1:8080/", Decider: Static{Default: Decision{Image: "node", Mode: Diskless}}}
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	if s, err := h.Script(context.Background(), mac); err != nil || !strings.Contains(s, "imprint.image=node:1") {
		t.Fatalf("script before the new build: %v\n%s", err, s)
	}
	bootStore(t, root, "2", time.Now(), []byte("kernel two"), []byte("an initrd"))
	if s, err := h.Script(context.Background(), mac); err != nil || !strings.Contains(s, "imprint.image=node:2") {
		t.Errorf("script after the new build: %v\n%s", err, s)
	}
}

// TestOnlyGETAndHEAD: every route of `imprint serve` is read-only; other
// methods get 405 with an Allow header (/ipxe/ used to answer them all).
func TestOnlyGETAndHEAD(t *testing.T) {
	root := t.TempDir()
	bootStore(t, root, "1", time.Now(), []byte("a kernel"), []byte("an initrd"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{HTTP: &HTTP{Store: root, Public: "http://" + addr + "/", Decider: Static{Default: Decision{Image: "node", Mode: Diskless}}},
		HTTPAddr: addr, IPXEDir: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	base := "http://" + addr
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatal("server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, p := range []string{"/ipxe/ipxe.efi", "/ipxe/undionly.kpxe", "/boot/node/1/vmlinuz", "/boot/node/1/ipxe.efi",
		"/index.json", "/images/node/1/manifest.json", "/boot.ipxe?mac=52:54:00:12:34:56", "/nothing"} {
		if resp, _ := get(t, http.MethodGet, base+p); p == "/ipxe/ipxe.efi" && resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
			resp, _ := get(t, m, base+p)
			if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "GET") || !strings.Contains(resp.Header.Get("Allow"), "HEAD") {
				t.Errorf("%s %s: %d, Allow %q; want 405 with Allow: GET, HEAD", m, p, resp.StatusCode, resp.Header.Get("Allow"))
			}
		}
	}
}

// TestTrustedServerIgnoresUnsignedNewerVersion: one unsigned (or wrongly
// signed) newer build used to stop a --trust server for the whole fleet.
// Such versions are invisible: "newest" is the newest signed one, the
// served index.json lists only signed versions, and the iPXE script points
// at the signed one; asking for the unsigned one by name is refused.
func TestTrustedServerIgnoresUnsignedNewerVersion(t *testing.T) {
	root := t.TempDir()
	keys := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(keys, "k"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.GenerateKey(filepath.Join(keys, "other")); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour)
	st := bootStore(t, root, "1", t0, []byte("signed kernel"), []byte("an initrd"))
	bootStore(t, root, "2", t0.Add(10*time.Minute), []byte("unsigned kernel"), []byte("an initrd"))
	bootStore(t, root, "3", t0.Add(20*time.Minute), []byte("kernel signed by another key"), []byte("an initrd"))
	sign := func(version, key string) {
		raw, err := os.ReadFile(filepath.Join(root, "images", "node", version, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := image.LoadSigner(filepath.Join(keys, key+image.PrivateKeySuffix))
		if err != nil {
			t.Fatal(err)
		}
		sig, err := s.Sign(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutSignature("node", version, sig); err != nil {
			t.Fatal(err)
		}
	}
	sign("1", "k")
	sign("3", "other")
	trust, err := image.ParseTrust([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	h := &HTTP{Store: root, Trust: trust, Public: "http://10.0.0.1:8080/", Decider: Static{Default: Decision{Image: "node", Mode: Diskless}}}
	srv := httptest.NewServer(h)
	defer srv.Close()

	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	s, err := h.Script(context.Background(), mac)
	if err != nil || !strings.Contains(s, "imprint.image=node:1") || !strings.Contains(s, "/boot/node/1/vmlinuz") {
		t.Errorf("iPXE script: %v\n%s", err, s)
	}
	resp, b := get(t, http.MethodGet, srv.URL+"/index.json")
	var idx store.Index
	if err := json.Unmarshal(b, &idx); err != nil || resp.StatusCode != 200 {
		t.Fatalf("index.json: %d %v %s", resp.StatusCode, err, b)
	}
	if vs := idx.Images["node"]; len(vs) != 1 || vs[0].Version != "1" {
		t.Errorf("index.json lists %+v; want only the signed version 1", vs)
	}
	// A deploy or agent resolving "newest" from this server gets v1.
	hs, _ := store.OpenHTTP(srv.URL)
	if res, err := store.Resolve(context.Background(), hs, "node", ""); err != nil || res.Manifest.Version != "1" || trust.Check(res) != nil {
		t.Errorf("newest over HTTP: %v %v", res, err)
	}
	if resp, b := get(t, http.MethodGet, srv.URL+"/boot/node/1/vmlinuz"); resp.StatusCode != 200 || string(b) != "signed kernel" {
		t.Errorf("signed kernel: %d %q", resp.StatusCode, b)
	}
	for _, v := range []string{"2", "3"} {
		for _, p := range []string{"/boot/node/" + v + "/vmlinuz", "/images/node/" + v + "/manifest.json"} {
			if resp, b := get(t, http.MethodGet, srv.URL+p); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: %d %q; want 403", p, resp.StatusCode, b)
			}
		}
	}
	// The PXE loader comes from the signed version too.
	sv := &Server{HTTP: h}
	rd, err := sv.tftpOpen(context.Background(), image.LoaderIPXEEFI, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := rd.(io.Closer); ok {
		defer c.Close()
	}
	if b, _ := io.ReadAll(rd); string(b) != "MZ the image's iPXE" {
		t.Errorf("ipxe.efi: %q", b)
	}
}
