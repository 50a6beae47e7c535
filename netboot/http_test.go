package netboot

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

func testStore(t *testing.T) (string, *image.Manifest, string) {
	t.Helper()
	root := t.TempDir()
	st, err := store.CreateDir(root)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20)
	rand.Read(data)
	c, _, err := image.StoreContent(context.Background(), st, bytes.NewReader(data), int64(len(data)), 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	kernel := []byte("a kernel")
	kc, _, _ := image.StoreContent(context.Background(), st, bytes.NewReader(kernel), int64(len(kernel)), 1<<20, nil)
	m := &image.Manifest{Format: image.FormatVersion, Name: "node", Version: "1", ChunkSize: 1 << 20,
		Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}},
		Boot:       &image.Boot{Kernel: kc, Agent: kc, Cmdline: "root=/dev/sda2 ro console=ttyS0"},
	}
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	if err := st.PutLayout("node", "1", layout.Layout{Partitions: []layout.Spec{
		{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: 64 << 20},
		{Name: "root", Type: layout.TypeRootX86_64, Role: layout.RoleImage, Size: 8 << 20},
	}}); err != nil {
		t.Fatal(err)
	}
	// A secret beside the store, and a symlink inside it pointing out.
	os.WriteFile(filepath.Join(filepath.Dir(root), "secret"), []byte("secret"), 0o600)
	os.Symlink("../../secret", filepath.Join(root, "chunks", "ab", "abababababababababababababababababababababababababababababababab"))
	os.MkdirAll(filepath.Join(root, "chunks", "ab"), 0o755)
	os.Symlink(filepath.Join(filepath.Dir(root), "secret"), filepath.Join(root, "chunks", "ab", "ab00000000000000000000000000000000000000000000000000000000000000"))
	return root, m, string(data)
}

func TestHTTPServesTheStoreAndNothingElse(t *testing.T) {
	root, m, data := testStore(t)
	h := &HTTP{Store: root, Public: "http://10.0.0.1:8080/", Console: "console=ttyS0",
		Decider: Static{Default: Decision{Image: "node", Mode: Diskless}}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string, hdr ...string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	// The store works as an HTTP source: a deploy would read exactly this.
	src, _ := store.OpenHTTP(srv.URL)
	r, err := store.Resolve(context.Background(), src, "node", "")
	if err != nil {
		t.Fatal(err)
	}
	sum := m.Partitions[0].Content.Chunks[0]
	resp, body := get("/chunks/" + sum[:2] + "/" + sum)
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"`+sum+`"` || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("chunk: %d %v", resp.StatusCode, resp.Header)
	}
	resp, part := get("/chunks/"+sum[:2]+"/"+sum, "Range", "bytes=0-9")
	if resp.StatusCode != http.StatusPartialContent || len(part) != 10 || part != body[:10] {
		t.Fatalf("range: %d %d bytes", resp.StatusCode, len(part))
	}
	resp, _ = get("/chunks/"+sum[:2]+"/"+sum, "If-None-Match", `"`+sum+`"`)
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", resp.StatusCode)
	}
	if r.Manifest.Name != "node" {
		t.Fatal("manifest over HTTP")
	}
	if r.Layout == nil || r.Layout.Partitions[1].Size != 8<<20 {
		t.Fatalf("layout.json over HTTP: %+v", r.Layout)
	}
	resp, kernel := get("/boot/node/1/vmlinuz")
	if resp.StatusCode != 200 || kernel != "a kernel" {
		t.Fatalf("kernel: %d %q", resp.StatusCode, kernel)
	}
	_ = data
	for _, bad := range []string{
		"/../secret", "/%2e%2e/secret", "/chunks/../../secret", "/images/../../secret",
		"/chunks/ab/abababababababababababababababababababababababababababababababab",
		"/chunks/ab/ab00000000000000000000000000000000000000000000000000000000000000",
		"/images/node/1/../../../index.json", "/images/..%2f..%2fsecret/1/manifest.json",
		"/etc/passwd", "/chunks/xx/" + sum, "/boot/node/1/../../../secret", "/boot/node/1/shadow",
		"/" + strings.Repeat("a", 600),
	} {
		resp, body := get(bad)
		if resp.StatusCode < 400 || strings.Contains(body, "secret") {
			t.Errorf("%s: %d %q", bad, resp.StatusCode, body)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/index.json", strings.NewReader("x"))
	if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", resp.StatusCode)
	}
}

func TestIPXEScript(t *testing.T) {
	root, _, _ := testStore(t)
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	other, _ := net.ParseMAC("52:54:00:00:00:01")
	h := &HTTP{Store: root, Public: "http://10.0.0.1:8080/", Console: "console=ttyS0", Decider: Static{
		Default: Decision{Image: "node", Mode: Diskless},
		PerMAC:  map[string]Decision{"52:54:00:12:34:56": {Image: "node:1", Mode: Install, InstallDisk: "/dev/vda"}},
	}}
	s, err := h.Script(context.Background(), mac)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"#!ipxe", "kernel http://10.0.0.1:8080/boot/node/1/vmlinuz initrd=agent.img", "imprint.source=http://10.0.0.1:8080/",
		"imprint.image=node:1", "imprint.install=/dev/vda", "initrd --name agent.img http://10.0.0.1:8080/boot/node/1/agent.img"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "root=/dev/sda2") {
		t.Errorf("the image's root= reached the agent:\n%s", s)
	}
	s, _ = h.Script(context.Background(), other)
	if strings.Contains(s, "imprint.install") || !strings.Contains(s, "diskless") {
		t.Errorf("default machine:\n%s", s)
	}
	h.Decider = Static{Default: Decision{Image: "missing", Mode: Diskless}}
	if _, err := h.Script(context.Background(), other); err == nil {
		t.Error("a missing image gave a script")
	}
}

// Plan is the boot a Script describes, for callers that boot it directly
// (imprint vm --netboot): paths under the server, the agent's arguments
// without iPXE's initrd=, and the errors a caller acts on.
func TestPlan(t *testing.T) {
	root, m, _ := testStore(t)
	h := &HTTP{Store: root, Public: "http://10.0.2.2:4000", Console: "console=ttyS0", Decider: Static{}}
	ctx := context.Background()
	p, err := h.Plan(ctx, Decision{Image: "node", Mode: Diskless, Cmdline: "imprint.root=ram  imprint.node=n1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"imprint.source=http://10.0.2.2:4000/", "imprint.image=node:1", "console=ttyS0", "ro", "console=ttyS0", "imprint.root=ram", "imprint.node=n1"}
	if p.Image() != "node:1" || p.Kernel != "boot/node/1/vmlinuz" || p.Agent != "boot/node/1/agent.img" || strings.Join(p.Args, " ") != strings.Join(want, " ") {
		t.Errorf("plan %+v; want args %q", p, want)
	}
	if err := p.CheckAgent(); err != nil {
		t.Errorf("an image with an agent: %v", err)
	}
	if _, err := h.Plan(ctx, Decision{Image: "missing", Mode: Diskless}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing image: %v; want store.ErrNotFound", err)
	}
	st, _ := store.OpenDir(root)
	bare := *m
	bare.Version, bare.Boot = "2", &image.Boot{Kernel: m.Boot.Kernel}
	if _, err := st.PutManifest(&bare); err != nil {
		t.Fatal(err)
	}
	checkAgent := func(img string) error {
		t.Helper()
		p, err := h.Plan(ctx, Decision{Image: img})
		if err != nil {
			t.Fatal(err)
		}
		return p.CheckAgent()
	}
	if err := checkAgent("node:2"); !errors.Is(err, ErrNoAgent) {
		t.Errorf("image without an agent: %v; want ErrNoAgent", err)
	}
	h.Agent = "/some/agent.img"
	if err := checkAgent("node:2"); err != nil {
		t.Errorf("image without an agent, server with one: %v", err)
	}
	bare.Version, bare.Boot = "3", nil
	if _, err := st.PutManifest(&bare); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Plan(ctx, Decision{Image: "node:3"}); !errors.Is(err, ErrNoKernel) {
		t.Errorf("image without a kernel: %v; want ErrNoKernel", err)
	}
}
