package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/store"
)

// baseTree writes a small root tree: 300 files of 4-60 KiB in 10
// directories (~9 MiB), from a fixed seed.
func baseTree(t *testing.T, dir string) {
	t.Helper()
	rnd := rand.New(rand.NewSource(1))
	for i := 0; i < 300; i++ {
		p := filepath.Join(dir, fmt.Sprintf("d%d", i%10), fmt.Sprintf("f%03d", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4<<10+rnd.Intn(56<<10))
		rnd.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fileInImage reads one file out of an ext4 image with debugfs.
func fileInImage(t *testing.T, img, path string) ([]byte, bool) {
	t.Helper()
	out, err := exec.Command(testenv.Tool(t, "debugfs"), "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	st, _ := exec.Command(testenv.Tool(t, "debugfs"), "-R", "stat "+path, img).CombinedOutput()
	return out, !bytes.Contains(st, []byte("File not found"))
}

func rootImage(t *testing.T, st *store.Dir, name, version, out string) *image.Manifest {
	t.Helper()
	ctx := context.Background()
	raw, err := st.Manifest(ctx, name, version)
	if err != nil {
		t.Fatal(err)
	}
	m, err := image.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := m.Partition("root")
	if err := extractContent(ctx, Options{Store: st}, m, p.Content, out); err != nil {
		t.Fatal(err)
	}
	return m
}

func newChunks(v1, v2 *image.Manifest) (fresh, total int) {
	p1, _ := v1.Partition("root")
	p2, _ := v2.Partition("root")
	old := map[string]bool{}
	for _, c := range p1.Content.Chunks {
		old[c] = true
	}
	seen := map[string]bool{}
	for _, c := range p2.Content.Chunks {
		if c == image.ZeroChunk || seen[c] {
			continue
		}
		seen[c] = true
		total++
		if !old[c] {
			fresh++
		}
	}
	return fresh, total
}

// TestBuildOnBaseChangesFewChunks builds v1 fresh, then v2 = v1's tree plus
// one small file minus one file, once fresh and once with --base v1: on the
// base under 10 % of v2's chunks are new (fresh: most of them), the image
// holds exactly the tree (the new file, not the deleted one), e2fsck is
// clean, and the manifest names its base. v3 adds more than the
// filesystem holds: it grows.
func TestBuildOnBaseChangesFewChunks(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "mkfs.ext4", "e2fsck", "resize2fs", "rsync", "debugfs", "mount")
	testenv.NeedLoop(t)
	ctx := context.Background()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	baseTree(t, tree)
	st, err := store.CreateDir(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	build := func(version, base string) *Result {
		t.Helper()
		res, err := Build(ctx, Options{Store: st, Name: "demo", Version: version, Rootfs: tree, NoKernel: true, ChunkSize: 64 << 10, Base: base, TmpDir: dir})
		if err != nil {
			t.Fatalf("build %s (base %q): %v", version, base, err)
		}
		return res
	}
	v1 := build("1", "")
	if err := os.WriteFile(filepath.Join(tree, "d3", "motd"), []byte("v2 says hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(tree, "d5", "f005")); err != nil {
		t.Fatal(err)
	}
	fresh := build("2-fresh", "")
	v2 := build("2", "demo:1")

	fn, ftotal := newChunks(v1.Manifest, fresh.Manifest)
	n, total := newChunks(v1.Manifest, v2.Manifest)
	t.Logf("new chunks against v1: fresh build %d of %d, --base build %d of %d", fn, ftotal, n, total)
	if n*10 >= total {
		t.Errorf("--base build: %d of %d chunks new, want under 10 %%", n, total)
	}
	if fn*2 < ftotal {
		t.Errorf("the fresh build changed only %d of %d chunks: the tree change is too small to prove anything", fn, ftotal)
	}

	img := filepath.Join(dir, "v2.ext4")
	m := rootImage(t, st, "demo", "2", img)
	if got, ok := fileInImage(t, img, "/d3/motd"); !ok || string(got) != "v2 says hello\n" {
		t.Errorf("/d3/motd in v2: %q (present %v)", got, ok)
	}
	if _, ok := fileInImage(t, img, "/d5/f005"); ok {
		t.Errorf("/d5/f005 was removed from the tree but is in v2")
	}
	want, _ := os.ReadFile(filepath.Join(tree, "d7", "f007"))
	if got, _ := fileInImage(t, img, "/d7/f007"); !bytes.Equal(got, want) {
		t.Errorf("/d7/f007 in v2 differs from the tree")
	}
	if b, err := exec.Command(testenv.Tool(t, "e2fsck"), "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn v2: %v\n%s", err, b)
	}
	var info BaseInfo
	if err := json.Unmarshal(m.Extensions[BaseExtension], &info); err != nil {
		t.Fatalf("extension %s: %v (%s)", BaseExtension, err, m.Extensions[BaseExtension])
	}
	if info != (BaseInfo{Name: "demo", Version: "1", ID: v1.ID}) {
		t.Errorf("extension %s = %+v, want demo:1 id %s", BaseExtension, info, v1.ID)
	}
	if _, ok := fresh.Manifest.Extensions[BaseExtension]; ok {
		t.Errorf("a fresh build records a base")
	}

	// v3: 3x the data; the filesystem must grow to hold it.
	big := make([]byte, 3*v1.Manifest.Partitions[0].Content.Size/2)
	rand.New(rand.NewSource(3)).Read(big)
	if err := os.WriteFile(filepath.Join(tree, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	v3 := build("3", "demo") // the newest in the store: 2 (or 2-fresh, same tree)
	p1, _ := v1.Manifest.Partition("root")
	p3, _ := v3.Manifest.Partition("root")
	if p3.Content.Size <= p1.Content.Size {
		t.Errorf("v3's root is %d bytes, v1's %d: it did not grow", p3.Content.Size, p1.Content.Size)
	}
	img3 := filepath.Join(dir, "v3.ext4")
	rootImage(t, st, "demo", "3", img3)
	if got, _ := fileInImage(t, img3, "/big"); !bytes.Equal(got, big) {
		t.Errorf("/big in v3: %d bytes, want %d equal ones", len(got), len(big))
	}
	if b, err := exec.Command(testenv.Tool(t, "e2fsck"), "-fn", img3).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn v3: %v\n%s", err, b)
	}
}

func TestBuildOnBaseBadInput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.CreateDir(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(dir, "data.img")
	if err := os.WriteFile(part, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(ctx, Options{Store: st, Name: "demo", Version: "1", ChunkSize: 64 << 10, Partitions: []PartitionFile{{Name: "data", Path: part}}}); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no rootfs", Options{Base: "demo:1", Partitions: []PartitionFile{{Name: "data", Path: part}}}, "give --rootfs"},
		{"unknown version", Options{Base: "demo:9", Rootfs: tree}, `"9"`},
		{"unknown image", Options{Base: "other", Rootfs: tree}, `no image "other"`},
		{"other chunk size", Options{Base: "demo:1", Rootfs: tree, ChunkSize: 1 << 20}, "--chunk-size"},
		{"base without a root", Options{Base: "demo:1", Rootfs: tree}, `no partition "root"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Store, o.Name, o.Version, o.NoKernel, o.TmpDir = st, "demo", "2", true, dir
			_, err := Build(ctx, o)
			if !errors.Is(err, ErrInput) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Errorf("err = %v, want ErrInput naming %s", err, tc.want)
			}
		})
	}
}
