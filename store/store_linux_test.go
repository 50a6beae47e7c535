package store

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/testenv"
)

// TestChunkWriteCutShortLeavesNoPartialFile interrupts a chunk write for
// real: the store lies on a 1 MiB tmpfs, a few small chunks fit, and a
// 2 MiB incompressible chunk runs out of space halfway through its write.
// Afterwards every file on that file system, dot-files included, must be a
// complete chunk under its own name: no partial chunk under the final
// name, no temporary file beside it or in $TMPDIR.
func TestChunkWriteCutShortLeavesNoPartialFile(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tmpdirHere bool // $TMPDIR on the store's file system, where renameio then puts its temporary files
	}{
		{"temporary file beside the chunk", false},
		{"temporary file in TMPDIR", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := smallTmpfs(t, "size=1m")
			root := filepath.Join(mnt, "store")
			if tc.tmpdirHere {
				tmp := filepath.Join(mnt, "tmp")
				if err := os.Mkdir(tmp, 0o755); err != nil {
					t.Fatal(err)
				}
				t.Setenv("TMPDIR", tmp)
			}
			st, err := CreateDir(root)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]byte{}
			for range 3 {
				data := randBytes(64 << 10)
				sum := image.HashBytes(data)
				if _, err := st.PutChunk(sum, data); err != nil {
					t.Fatal(err)
				}
				want[st.chunkPath(sum)] = data
			}

			big := randBytes(2 << 20)
			bigSum := image.HashBytes(big)
			_, err = st.PutChunk(bigSum, big)
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), bigSum) {
				t.Fatalf("PutChunk on a full file system: %v, want ENOSPC naming chunk %s", err, bigSum)
			}
			if st.HasChunk(bigSum) {
				t.Errorf("the cut-short chunk %s is in the store", bigSum)
			}

			dec, err := image.NewDecoder()
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Close()
			var seen []string
			err = filepath.WalkDir(mnt, func(p string, e fs.DirEntry, err error) error {
				if err != nil || e.IsDir() {
					return err
				}
				seen = append(seen, p)
				data, ok := want[p]
				if !ok {
					t.Errorf("left behind: %s (%v)", p, e.Type())
					return nil
				}
				stored, err := st.Chunk(context.Background(), filepath.Base(p))
				if err != nil {
					return err
				}
				if _, err := dec.Decode(stored, filepath.Base(p), int64(len(data)), nil); err != nil {
					t.Errorf("stored chunk damaged: %v", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != len(want) {
				sort.Strings(seen)
				t.Errorf("files on the store's file system: %q, want the %d complete chunks", seen, len(want))
			}
		})
	}
}

// smallTmpfs mounts a tmpfs with the given options on a fresh directory,
// unmounting it when the test ends (lazily, so a file a broken store left
// open cannot keep the mount around).
func smallTmpfs(t *testing.T, opts string) string {
	t.Helper()
	testenv.NeedRoot(t)
	dir := t.TempDir() // registered first, so removed after the unmount
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		testenv.Skipf(t, "cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
	return dir
}
