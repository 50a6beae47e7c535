package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseCmdlineLocalMode(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Params
		wantErr string
	}{
		{"root=PARTUUID=abc ro imprint.mode=local imprint.node=gpu07 imprint.class=gpu imprint.verify=quick",
			Params{Mode: ModeLocal, Root: "PARTUUID=abc", Node: "gpu07", Class: "gpu", Verify: "quick", OnFail: "reboot"}, ""},
		{"root=PARTUUID=abc rw imprint.mode=local imprint.state=none", Params{Mode: ModeLocal, Root: "PARTUUID=abc", RW: true, State: "none", OnFail: "reboot"}, ""},
		{"imprint.source=http://a/ imprint.state=PARTUUID=x imprint.node=n1", Params{Sources: []string{"http://a/"}, State: "PARTUUID=x", Node: "n1", OnFail: "reboot"}, ""},
		{"imprint.mode=local root=/dev/vda2", Params{}, "needs root=PARTUUID="},
		{"imprint.mode=local", Params{}, "needs root=PARTUUID="},
		{"imprint.mode=remote imprint.source=http://a/", Params{}, "imprint.mode=remote"},
		{"imprint.mode=local root=PARTUUID=a imprint.verify=some", Params{}, "imprint.verify=some"},
		{"imprint.source=http://a/ imprint.fill=maybe", Params{}, "imprint.fill=maybe: want 1 or 0"},
		{"imprint.source=http://a/ imprint.swarm=2", Params{}, "imprint.swarm=2: want 1 or 0"},
		{"imprint.source=http://a/ imprint.fill imprint.swarm=no", Params{Sources: []string{"http://a/"}, Fill: true, OnFail: "reboot"}, ""},
		{"imprint.mode=local root=PARTUUID=a imprint.verify=chunks imprint.source=http://a/",
			Params{Mode: ModeLocal, Root: "PARTUUID=a", Verify: VerifyChunks, Sources: []string{"http://a/"}, OnFail: "reboot"}, ""},
	} {
		p, err := ParseCmdline(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(p, tc.want) {
			t.Errorf("%q:\n got %+v %v\nwant %+v", tc.in, p, err, tc.want)
		}
	}
}

func TestCopyEntryKeepsTreesSymlinksAndModes(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "copy")
	os.MkdirAll(filepath.Join(src, "sub"), 0o750)
	os.WriteFile(filepath.Join(src, "sub", "f"), []byte("data"), 0o640)
	os.Symlink("../elsewhere", filepath.Join(src, "link"))
	if err := copyEntry(src, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "sub", "f")); string(b) != "data" {
		t.Errorf("file content %q", b)
	}
	if st, _ := os.Stat(filepath.Join(dst, "sub", "f")); st == nil || st.Mode().Perm() != 0o640 {
		t.Errorf("file mode %v", st)
	}
	if st, _ := os.Stat(filepath.Join(dst, "sub")); st == nil || st.Mode().Perm() != 0o750 {
		t.Errorf("dir mode %v", st)
	}
	if l, err := os.Readlink(filepath.Join(dst, "link")); err != nil || l != "../elsewhere" {
		t.Errorf("symlink %q %v: a symlink must stay a symlink", l, err)
	}
	// showVariant replaces the plain file with the variant.
	os.WriteFile(filepath.Join(dst, "fstab"), []byte("plain"), 0o644)
	os.WriteFile(filepath.Join(dst, "fstab.gpu"), []byte("gpu"), 0o600)
	if err := showVariant(dst, "/fstab.gpu", "/fstab"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "fstab")); string(b) != "gpu" {
		t.Errorf("fstab %q after showVariant", b)
	}
}
