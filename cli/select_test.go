package cli

import (
	"path/filepath"
	"strings"
	"testing"

	imstore "github.com/imprint-dev/imprint/store"
)

// TestDiskSelectorsOnTheCommandLine: deploy --disk and serve --install-disk
// take disk selectors; a bad or unmatched one is refused naming the flag,
// before anything is fetched, written or served.
func TestDiskSelectorsOnTheCommandLine(t *testing.T) {
	st, err := imstore.CreateDir(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"deploy, no disk matches", []string{"deploy", "--from", st.Root, "--image", "x", "--disk", "serial=imprint-no-such-disk", "--yes"},
			[]string{"--disk: no disk matches \"serial=imprint-no-such-disk\"; disks seen:"}},
		{"deploy, a mistyped term", []string{"deploy", "--from", st.Root, "--image", "x", "--disk", "serail=S3Z1", "--yes"},
			[]string{"--disk: bad disk selector", `"serail=S3Z1" is not a term`}},
		{"serve, a space in a model", []string{"serve", "--store", st.Root, "--image", "x", "--mode", "install", "--install-disk", "model=Samsung SSD"},
			[]string{"--install-disk: bad disk selector", "write a space in a model or serial as _"}},
		{"serve, a kernel name without /dev", []string{"serve", "--store", st.Root, "--image", "x", "--mode", "install", "--install-disk", "sda"},
			[]string{"--install-disk: bad disk selector"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0\n%s%s", out, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
		})
	}
}
