package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/ondisk"
	imstore "github.com/imprint-dev/imprint/store"
)

// treeImage is a small image with every kind of content a disk carries:
// random, repeated and all-zero chunks in the root, and a kernel, initrd
// and agent that live as files on the deployed disk's ESP.
func treeImage(t *testing.T, extra ...string) built {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root.img")
	b := make([]byte, 3<<20)
	copy(b, bytes.Repeat([]byte("imprint tree "), 40000))
	r := make([]byte, 1<<20)
	randomFile(t, filepath.Join(dir, "r"), len(r))
	r, _ = os.ReadFile(filepath.Join(dir, "r"))
	copy(b[2<<20:], r) // 1 MiB random at the end; zeros between
	os.WriteFile(root, b, 0o644)
	for _, f := range []string{"vmlinuz", "initrd", "agent"} {
		randomFile(t, filepath.Join(dir, f), 300<<10+17) // not a chunk multiple
	}
	layout := filepath.Join(dir, "layout")
	os.WriteFile(layout, []byte("esp esp 64M esp\nroot root-x86-64 auto image\n"), 0o644)
	args := []string{"--store", filepath.Join(dir, "store"), "--name", "tree", "--version", "v1",
		"--partition", "root=" + root, "--layout", layout, "--chunk-size", "256K",
		"--kernel", filepath.Join(dir, "vmlinuz"), "--initrd", filepath.Join(dir, "initrd"),
		"--agent", filepath.Join(dir, "agent"), "--cmdline", "console=ttyS0"}
	return buildImage(t, append(args, extra...)...)
}

// serveDisk is imprint serve --disk's HTTP side on a test listener.
func serveDisk(t *testing.T, disk string, logs *bytes.Buffer) *httptest.Server {
	t.Helper()
	src, err := ondisk.OpenDiskSource(disk)
	if err != nil {
		t.Fatalf("open %s as a source: %v", disk, err)
	}
	h := &netboot.HTTP{Disk: src, Decider: netboot.Static{}}
	if logs != nil {
		h.Logf = func(f string, a ...any) { logs.WriteString(strings.TrimSpace(sprintf(f, a...)) + "\n") }
	}
	s := httptest.NewServer(h)
	t.Cleanup(func() { s.Close(); src.Close() })
	return s
}

func deployTo(t *testing.T, b built, disk string, from ...string) string {
	t.Helper()
	args := []string{"deploy", "--image", b.name, "--disk", disk, "--size", "100M", "--yes"}
	for _, f := range from {
		args = append(args, "--from", f)
	}
	return mustRun(t, args...)
}

// rootSum hashes a deployed disk's root partition over the image's size.
func rootSum(t *testing.T, b built, disk string) string {
	t.Helper()
	p, _ := onDisk(t, disk).State.Table.Find("root")
	return sha256Range(t, disk, p.Start, b.m.Partitions[0].Content.Size)
}

func TestThreeLevelTree(t *testing.T) {
	b := treeImage(t)
	dir := t.TempDir()
	a, bb, c := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img"), filepath.Join(dir, "c.img")
	deployTo(t, b, a, b.store)
	sa := serveDisk(t, a, nil)
	deployTo(t, b, bb, sa.URL)
	sb := serveDisk(t, bb, nil)
	out := deployTo(t, b, c, sb.URL)
	if !strings.Contains(out, b.id) {
		t.Errorf("deploy from the second level does not name the master's id %s:\n%s", b.id, out)
	}
	want := b.m.Partitions[0].Content.SHA256
	for _, d := range []string{a, bb, c} {
		if code, out, errs := run(t, "verify", "--disk", d); code != 0 {
			t.Fatalf("verify %s: exit %d\n%s%s", d, code, out, errs)
		}
		if got := rootSum(t, b, d); got != want {
			t.Errorf("%s: root hashes to %s, the master's to %s", filepath.Base(d), got, want)
		}
		if id := onDisk(t, d).State.ImageID; id != b.id {
			t.Errorf("%s records image id %s, want the master's %s", filepath.Base(d), id, b.id)
		}
	}
	// The kernel, initrd and agent came from A's and B's ESP files, hop by
	// hop: C's copies must be the master's.
	for _, f := range []struct {
		name string
		c    *image.Content
	}{{"vmlinuz", b.m.Boot.Kernel}, {"initrd.img", b.m.Boot.Initrd}, {"agent.img", b.m.Boot.Agent}} {
		got := espFile(t, c, "EFI/imprint/v1/"+f.name)
		if image.HashBytes(got) != f.c.SHA256 {
			t.Errorf("C's %s differs from the master's", f.name)
		}
	}
}

func TestServeDiskRefusesDriftedChunks(t *testing.T) {
	b := treeImage(t)
	dir := t.TempDir()
	a := filepath.Join(dir, "a.img")
	deployTo(t, b, a, b.store)
	// Drift: bytes change in root chunk 0 (as a read-write mount would) and
	// in the last chunk (random data).
	root, _ := onDisk(t, a).State.Table.Find("root")
	content := b.m.Partitions[0].Content
	last := len(content.Chunks) - 1
	flipBit(t, a, root.Start+100)
	flipBit(t, a, root.Start+int64(last)*b.m.ChunkSize+5)

	var logs bytes.Buffer
	sa := serveDisk(t, a, &logs)
	resp, err := http.Get(sa.URL + "/chunks/" + content.Chunks[0][:2] + "/" + content.Chunks[0])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("a drifted chunk was answered %s, want 409 Conflict", resp.Status)
	}
	if !strings.Contains(logs.String(), "REFUSED drifted chunk") || !strings.Contains(logs.String(), "partition root chunk 0") {
		t.Errorf("the refusal was not logged with its place:\n%s", logs.String())
	}
	// An intact chunk is still served.
	resp, err = http.Get(sa.URL + "/chunks/" + content.Chunks[1][:2] + "/" + content.Chunks[1])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("an intact chunk: %s", resp.Status)
	}

	// B takes A first and the master second: it ends identical, and the
	// summary names what came from the master.
	bdisk := filepath.Join(dir, "b.img")
	code, out, errs := run(t, "deploy", "--from", sa.URL, "--from", b.store, "--image", b.name, "--disk", bdisk, "--size", "100M", "--yes")
	if code != 0 {
		t.Fatalf("deploy from a drifted peer and the master: exit %d\n%s%s", code, out, errs)
	}
	if got := rootSum(t, b, bdisk); got != content.SHA256 {
		t.Fatal("B is not identical to the master")
	}
	if !strings.Contains(errs, "drifted") {
		t.Errorf("the refused chunks were not reported:\n%s", errs)
	}
	// Chunks 0 and the last are 256 KiB each (the last chunk is 256 KiB
	// too: 3 MiB is a chunk multiple).
	if !strings.Contains(out, "512.0 KiB from "+b.store) {
		t.Errorf("the summary does not name 512 KiB from the master:\n%s", out)
	}
}

func TestExportGivesTheMastersImage(t *testing.T) {
	b := treeImage(t)
	dir := t.TempDir()
	a, bdisk := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	deployTo(t, b, a, b.store)
	deployTo(t, b, bdisk, serveDisk(t, a, nil).URL)

	out := filepath.Join(dir, "site-store")
	res := mustRun(t, "export", "--disk", bdisk, "--out", out)
	if !strings.Contains(res, b.id) {
		t.Errorf("export output does not name the master's id:\n%s", res)
	}
	st, err := imstore.OpenDir(out)
	if err != nil {
		t.Fatal(err)
	}
	r, err := imstore.Resolve(t.Context(), st, "tree", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != b.id {
		t.Fatalf("exported image id %s, master %s", r.ID, b.id)
	}
	// The exported store is a master: a new disk from it alone is identical.
	c := filepath.Join(dir, "c.img")
	deployTo(t, b, c, out)
	if rootSum(t, b, c) != b.m.Partitions[0].Content.SHA256 {
		t.Fatal("a disk deployed from the export differs")
	}
	// Exporting again into the same store stores nothing new.
	again := mustRun(t, "export", "--disk", bdisk, "--out", out)
	if !strings.Contains(again, " 0 new in the store") {
		t.Errorf("a second export stored chunks again:\n%s", again)
	}
}

func TestExportOfADriftedDisk(t *testing.T) {
	b := treeImage(t)
	dir := t.TempDir()
	a := filepath.Join(dir, "a.img")
	deployTo(t, b, a, b.store)
	root, _ := onDisk(t, a).State.Table.Find("root")
	flipBit(t, a, root.Start+(1<<20)) // a zero chunk gets a bit set

	out := filepath.Join(dir, "out")
	code, _, errs := run(t, "export", "--disk", a, "--out", out)
	if code != 1 || !strings.Contains(errs, "differ from the manifest") || !strings.Contains(errs, "--allow-drift") {
		t.Fatalf("a drifted export: exit %d, %s", code, errs)
	}
	if st, err := imstore.OpenDir(out); err == nil {
		idx, _ := st.Index(t.Context())
		if len(idx.Images) != 0 {
			t.Fatalf("a refused export left an image: %v", idx.Images)
		}
	}

	res := mustRun(t, "--json", "export", "--disk", a, "--out", out, "--allow-drift")
	var r ondisk.ExportResult
	if err := jsonUnmarshal(res, &r); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Version, "v1-drifted-") || r.ID == b.id || len(r.Drifted) != 1 {
		t.Fatalf("drifted export: %+v", r)
	}
	// The drifted version holds exactly what the disk holds now.
	c := filepath.Join(dir, "c.img")
	mustRun(t, "deploy", "--from", out, "--image", "tree:"+r.Version, "--disk", c, "--size", "100M", "--yes")
	pc, _ := onDisk(t, c).State.Table.Find("root")
	if sha256Range(t, c, pc.Start, b.m.Partitions[0].Content.Size) != sha256Range(t, a, root.Start, b.m.Partitions[0].Content.Size) {
		t.Fatal("the drifted export does not reproduce the drifted disk")
	}
}

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func espFile(t *testing.T, path, name string) []byte {
	t.Helper()
	d, err := disk.OpenDisk(path, disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	od, err := ondisk.ReadDisk(d)
	if err != nil {
		t.Fatal(err)
	}
	b, err := od.ESP.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestASickPeerIsPassedOver: a first --from that answers nothing but 503
// is given up on after two failures instead of costing every chunk its
// retries; the deploy takes everything from the next source.
func TestASickPeerIsPassedOver(t *testing.T) {
	b := treeImage(t)
	var mu sync.Mutex
	requests := 0
	sick := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	good := serveDisk(t, func() string {
		d := filepath.Join(t.TempDir(), "a.img")
		deployTo(t, b, d, b.store)
		return d
	}(), nil)
	disk := filepath.Join(t.TempDir(), "d.img")
	out := deployTo(t, b, disk, sick.URL, good.URL)
	if rootSum(t, b, disk) != b.m.Partitions[0].Content.SHA256 {
		t.Fatal("not identical")
	}
	mu.Lock()
	n := requests
	mu.Unlock()
	// Resolving the manifest goes to the first source too; then at most
	// the chunks in flight when it was marked down (workers x tries).
	if n > 20 {
		t.Errorf("the sick peer got %d requests; it should be passed over after two failures", n)
	}
	if !strings.Contains(out, "0 B from "+sick.URL) {
		t.Errorf("summary:\n%s", out)
	}
}
