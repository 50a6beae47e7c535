package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
)

// badChunk puts something that is not a stored chunk under a chunk's name.
func badChunk(t *testing.T, make func(p string) error) (*Dir, string) {
	t.Helper()
	st, err := CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sum := image.HashBytes([]byte("a chunk"))
	p := st.chunkPath(sum)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := make(p); err != nil {
		t.Fatal(err)
	}
	return st, sum
}

func TestChunkFilesAreRegularAndBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(p string) error
		want string
	}{
		{"a FIFO", func(p string) error { return syscall.Mkfifo(p, 0o644) }, "not a regular file"},
		{"a symlink to a FIFO", func(p string) error {
			if err := syscall.Mkfifo(p+".fifo", 0o644); err != nil {
				return err
			}
			return os.Symlink(filepath.Base(p)+".fifo", p)
		}, "not a regular file"},
		{"a character device", func(p string) error { return os.Symlink("/dev/zero", p) }, "not a regular file"},
		{"a 200 GiB sparse file", func(p string) error {
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Truncate(200 << 30)
		}, "larger than the largest stored chunk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, sum := badChunk(t, tc.make)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			done := make(chan error, 1)
			go func() {
				_, err := st.Chunk(context.Background(), sum)
				done <- err
			}()
			select {
			case err := <-done:
				runtime.ReadMemStats(&after)
				if !errors.Is(err, ErrBadChunk) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), sum) {
					t.Fatalf("Chunk: %v; want ErrBadChunk naming the chunk and saying %q", err, tc.want)
				}
				if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
					t.Fatalf("refusing the chunk allocated %d bytes", grew)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Chunk still blocked after 5 s")
			}
		})
	}
}
