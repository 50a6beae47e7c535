package disk

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
)

func TestMakeExt4GoIsFsckCleanAndRefusesASecondTime(t *testing.T) {
	testenv.NeedTool(t, "e2fsck")
	img := filepath.Join(t.TempDir(), "state.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Garbage where a filesystem would be: MakeExt4Go must clear what it
	// does not overwrite, yet it is no signature, so it formats.
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(i*7 + 1)
	}
	f.WriteAt(garbage, 8192)
	const off, n = 1 << 20, 64 << 20
	f.Truncate(off + n + 1<<20)
	d := fileDevice{f}
	sec := Section{D: d, Off: off, Len: n}
	if sig, err := Signature(sec); err != nil || sig != "" {
		t.Fatalf("empty partition: signature %q, %v", sig, err)
	}
	if err := MakeExt4Go(sec, "state"); err != nil {
		t.Fatal(err)
	}
	if sig, _ := Signature(sec); sig != "ext4" {
		t.Fatalf("after MakeExt4Go: signature %q", sig)
	}
	if err := MakeExt4Go(sec, "state"); !errors.Is(err, ErrHasFilesystem) {
		t.Fatalf("second MakeExt4Go: %v, want ErrHasFilesystem", err)
	}
	part := filepath.Join(t.TempDir(), "part.img")
	b := make([]byte, n)
	f.ReadAt(b, off)
	os.WriteFile(part, b, 0o644)
	if out, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		off  int64
		sig  string
		want string
	}{{0, "XFSB", "xfs"}, {4096 - 10, "SWAPSPACE2", "swap"}, {0, "LUKS\xba\xbe", "luks"}} {
		other := Section{D: d, Off: off + n, Len: 1 << 20}
		f.WriteAt(make([]byte, 1<<20), off+n)
		f.WriteAt([]byte(tc.sig), off+n+tc.off)
		if err := MakeExt4Go(other, "x"); !errors.Is(err, ErrHasFilesystem) {
			t.Errorf("%s: MakeExt4Go = %v, want ErrHasFilesystem", tc.want, err)
		}
	}
}

type fileDevice struct{ f *os.File }

func (d fileDevice) ReadAt(p []byte, off int64) (int, error)  { return d.f.ReadAt(p, off) }
func (d fileDevice) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }
func (d fileDevice) Size() int64                              { st, _ := d.f.Stat(); return st.Size() }
func (d fileDevice) SectorSize() int64                        { return 512 }
