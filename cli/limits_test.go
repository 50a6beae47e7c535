package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeployRefusesHugePartitionsAndKeepsTheGPT edits a stored manifest to
// carry local partitions whose sizes overflowed int64 arithmetic: the deploy
// onto a disk file that already holds a deployed GPT must fail naming the
// limit, and leave every byte of the file (its GPT above all) alone.
func TestDeployRefusesHugePartitionsAndKeepsTheGPT(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parts string
	}{
		{"one of MaxInt64", `{"name": "big", "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "role": "local", "size": 9223372036854775807},`},
		{"two of 2^62", `{"name": "a", "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "role": "local", "size": 4611686018427387904},
			{"name": "b", "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "role": "local", "size": 4611686018427387904},`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := smallImage(t)
			disk := filepath.Join(t.TempDir(), "disk.img")
			mustRun(t, "deploy", "--from", b.store, "--image", b.name, "--yes", "--size", "100M", "--disk", disk)
			before := fileSum(t, disk)

			name, ver, _ := strings.Cut(b.name, ":")
			// The layout, not the manifest, says how big partitions are.
			p := filepath.Join(b.store, "images", name, ver, "layout.json")
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			// Insert the huge partitions right after the ESP, before root.
			i := bytes.Index(raw, []byte(`{
      "name": "root"`))
			if i < 0 {
				t.Fatalf("layout.json has no root partition entry:\n%s", raw)
			}
			edited := append(append(append([]byte{}, raw[:i]...), tc.parts...), raw[i:]...)
			if err := os.WriteFile(p, edited, 0o644); err != nil {
				t.Fatal(err)
			}
			code, out, errs := run(t, "deploy", "--from", b.store, "--image", b.name, "--yes", "--disk", disk)
			if code == 0 || !strings.Contains(errs, "1.0 PiB limit") {
				t.Fatalf("exit %d; stdout %q; stderr %q; want a refusal naming the 1.0 PiB limit", code, out, errs)
			}
			if after := fileSum(t, disk); after != before {
				t.Fatal("the refused deploy changed the disk file")
			}
		})
	}
}
