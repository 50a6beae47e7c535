package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --piece-size sets the swarm's piece length in the manifest; 0 is
// pieces that are chunks (no extension); without it, a 256K-chunk image
// gets 64K pieces; a bad value is refused naming the flag.
func TestBuildPieceSize(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "root.img")
	randomFile(t, data, 1<<20)
	lay := filepath.Join(dir, "layout")
	if err := os.WriteFile(lay, []byte("esp esp 64M esp\nroot root-x86-64 auto image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := func(version string, more ...string) []string {
		return append([]string{"--store", filepath.Join(dir, "store"), "--name", "p", "--version", version, "--partition", "root=" + data, "--layout", lay, "--chunk-size", "256K"}, more...)
	}
	for _, tc := range []struct {
		version string
		flag    []string
		want    int64 // 0: no extension
	}{
		{"default", nil, 64 << 10},
		{"given", []string{"--piece-size", "32K"}, 32 << 10},
		{"zero", []string{"--piece-size", "0"}, 0},
	} {
		b := buildImage(t, args(tc.version, tc.flag...)...)
		sp, ok, err := b.m.SwarmPieces()
		if err != nil || ok != (tc.want != 0) || (ok && sp.PieceLength != tc.want) {
			t.Errorf("%s: extension %v %v %+v, want piece length %d", tc.version, ok, err, sp, tc.want)
		}
	}
	for _, bad := range []string{"8K", "48K", "1M", "lots"} {
		code, _, errs := run(t, append([]string{"build"}, args("bad", "--piece-size", bad)...)...)
		if code == 0 || !strings.Contains(errs, "--piece-size") {
			t.Errorf("--piece-size %s: exit %d, %q; want an error naming --piece-size", bad, code, errs)
		}
	}
}
