package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/layout"
	imstore "github.com/imprint-dev/imprint/store"
)

// The layout is not part of the image: the same signed image deployed
// with two layouts records one image id, verifies identical on both disks,
// and its signature holds under --trust for both. Each disk records the
// layout it was made from.
func TestOneImageTwoLayouts(t *testing.T) {
	sec, pub := keys(t, "master")
	b := treeImage(t, "--sign", sec)
	dir := t.TempDir()
	small := filepath.Join(dir, "small.layout")
	big := filepath.Join(dir, "big.layout")
	os.WriteFile(small, []byte("esp esp 256M esp\nroot root-x86-64 auto image\nscratch linux-generic 1G local ext4\n"), 0o644)
	os.WriteFile(big, []byte("esp esp 512M esp\nroot root-x86-64 16M image\nscratch linux-generic 3G local\n"), 0o644)
	for _, tc := range []struct {
		layout       string
		esp, scratch int64
		rootAtLeast  int64
		diskSize     string
	}{
		{small, 256 << 20, 1 << 30, 3 << 20, "1400M"},
		{big, 512 << 20, 3 << 30, 16 << 20, "3700M"},
	} {
		d := filepath.Join(dir, filepath.Base(tc.layout)+".img")
		out := mustRun(t, "deploy", "--from", b.store, "--image", b.name, "--disk", d, "--size", tc.diskSize, "--yes", "--trust", pub, "--layout", tc.layout, "--firmware", "uefi")
		if !strings.Contains(out, "signature verified") {
			t.Errorf("deploy --trust --layout %s: %s", tc.layout, out)
		}
		od := onDisk(t, d)
		if od.State.ImageID != b.id {
			t.Fatalf("%s: the disk records image id %s, the image is %s", tc.layout, od.State.ImageID, b.id)
		}
		esp, _ := od.State.Table.ByRole(layout.RoleESP)
		scratch, _ := od.State.Table.Find("scratch")
		root, _ := od.State.Table.Find("root")
		if esp.Len != tc.esp || scratch.Len != tc.scratch || root.Len < tc.rootAtLeast {
			t.Fatalf("%s: placed esp %d, scratch %d, root %d", tc.layout, esp.Len, scratch.Len, root.Len)
		}
		if od.Layout == nil || len(od.Layout.Partitions) != 3 || od.Layout.Partitions[0].Size != tc.esp {
			t.Fatalf("%s: the disk records layout %+v", tc.layout, od.Layout)
		}
		if code, out, errs := run(t, "verify", "--disk", d); code != 0 || !strings.Contains(out+errs, "identical") {
			t.Fatalf("verify %s: exit %d %s %s", d, code, out, errs)
		}
		// A deployed disk serves its own layout: a deploy from it makes
		// the same shape without --layout.
		peer := serveDisk(t, d, nil)
		d2 := d + ".copy"
		mustRun(t, "deploy", "--from", peer.URL, "--image", b.name, "--disk", d2, "--size", tc.diskSize, "--yes", "--trust", pub, "--firmware", "uefi")
		if got, _ := onDisk(t, d2).State.Table.ByRole(layout.RoleESP); got.Len != tc.esp {
			t.Fatalf("deploy from a disk made with %s: ESP %d", tc.layout, got.Len)
		}
		// An export keeps the image (same id, signature valid) and makes
		// the disk's layout the exported image's default.
		exported := d + ".store"
		mustRun(t, "export", "--disk", d, "--out", exported, "--trust", pub)
		st, err := imstore.OpenDir(exported)
		if err != nil {
			t.Fatal(err)
		}
		name, version, _ := strings.Cut(b.name, ":")
		r, err := imstore.Resolve(t.Context(), st, name, version)
		if err != nil {
			t.Fatal(err)
		}
		if r.ID != b.id || r.Layout == nil || r.Layout.Partitions[0].Size != tc.esp {
			t.Fatalf("export of the disk made with %s: id %s, layout %+v", tc.layout, r.ID, r.Layout)
		}
	}
}

func TestDeployRefusesALayoutThatDoesNotFitTheImage(t *testing.T) {
	b := treeImage(t)
	dir := t.TempDir()
	for _, tc := range []struct{ text, want string }{
		{"esp esp 256M esp\nroot root-x86-64 1M image\n", `image partition "root": the layout gives 1.0 MiB, the content is 3.0 MiB`},
		{"esp esp 256M esp\nroot linux-generic auto image\n", `image partition "root" has type linux-generic`},
		{"esp esp 256M esp\nsys root-x86-64 auto image\n", `image partition "sys": image tree:v1 has no content of that name`},
		{"esp esp 256M esp\nroot root-x86-64 8M local\n", `partition "root" is local in the layout`},
	} {
		f := filepath.Join(dir, "l")
		os.WriteFile(f, []byte(tc.text), 0o644)
		d := filepath.Join(dir, "d.img")
		code, _, errs := run(t, "deploy", "--from", b.store, "--image", b.name, "--disk", d, "--size", "400M", "--yes", "--layout", f)
		if code == 0 || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "--layout") {
			t.Errorf("%q: exit %d, %s; want %q", tc.text, code, errs, tc.want)
		}
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%q: the disk file was created", tc.text)
		}
	}
}

// Building the same contents with two layouts gives the same image id;
// only layout.json beside the manifest differs.
func TestBuildLayoutDoesNotChangeTheID(t *testing.T) {
	dir := t.TempDir()
	part := filepath.Join(dir, "root.bin")
	randomFile(t, part, 2<<20)
	var ids []string
	for i, text := range []string{"esp esp 64M esp\nroot root-x86-64 auto image\n", "esp esp 512M esp\nroot root-x86-64 64M image\nswap swap 1G local swap\n"} {
		f := filepath.Join(dir, "layout")
		os.WriteFile(f, []byte(text), 0o644)
		b := buildImage(t, "--store", filepath.Join(dir, "store", string(rune('a'+i))), "--name", "n", "--version", "1", "--partition", "root="+part, "--layout", f)
		ids = append(ids, b.id)
		lj, err := os.ReadFile(filepath.Join(b.store, "images", "n", "1", imstore.LayoutFile))
		if err != nil || !strings.Contains(string(lj), `"role": "esp"`) {
			t.Fatalf("layout.json: %v %s", err, lj)
		}
	}
	if ids[0] != ids[1] {
		t.Fatalf("the layout changed the image id: %s vs %s", ids[0], ids[1])
	}
}
