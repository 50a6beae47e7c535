package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/builder"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/netboot"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
)

// cancelOn is a console that cancels the install when the agent says want:
// the in-process stand-in for a machine losing power at that point.
type cancelOn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	want   string
	cancel context.CancelFunc
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if c.want != "" && strings.Contains(c.buf.String(), c.want) {
		c.cancel()
	}
	return len(p), nil
}

// TestAnInterruptedInstallResumesOnALoopDevice: the agent's install onto a
// block device, interrupted at several points, is finished by the next try
// (the next PXE boot), which resumes it and verifies the disk identical.
func TestAnInterruptedInstallResumesOnALoopDevice(t *testing.T) {
	testenv.NeedLoop(t)
	dir := t.TempDir()
	st, err := store.CreateDir(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 16<<20)
	rand.Read(data)
	root := filepath.Join(dir, "root.img")
	os.WriteFile(root, data, 0o644)
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, []byte("not really a kernel"), 0o644)
	res, err := builder.Build(context.Background(), builder.Options{Store: st, Name: "n", Version: "1", ChunkSize: 64 << 10,
		Partitions: []builder.PartitionFile{{Name: "root", Path: root}}, Kernel: kernel, TmpDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	honest := &netboot.HTTP{Store: st.Root, Decider: netboot.Static{}}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/chunks/") {
			time.Sleep(2 * time.Millisecond)
		}
		honest.ServeHTTP(w, r)
	}))
	defer slow.Close()

	for _, at := range []string{"deploy: partitioned", "deploy: write root 25%", "deploy: write root 75%", "deploy: verify root", "deploy: bootloader"} {
		t.Run(at, func(t *testing.T) {
			loop := testenv.LoopDevice(t, 1<<30)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			console := &cancelOn{want: at, cancel: cancel}
			a := &Agent{Console: console, Root: dir, Params: Params{Image: "n:1", Sources: []string{slow.URL}, Install: loop}}
			srcs, err := a.sources()
			if err != nil {
				t.Fatal(err)
			}
			r, err := a.resolve(ctx, srcs)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.deployTo(ctx, srcs, r, loop); err == nil {
				t.Fatalf("the install finished before it was interrupted at %q:\n%s", at, console.buf.String())
			}
			console.want = ""
			out, err := a.deployTo(context.Background(), srcs, r, loop)
			if err != nil {
				t.Fatalf("the retry failed: %v\n%s", err, console.buf.String())
			}
			if at != "deploy: partitioned" && !out.Plan.Resume {
				t.Errorf("the retry after %q did not resume", at)
			}
			rep, err := ondisk.VerifyDisk(context.Background(), loop, nil)
			if err != nil || !rep.Identical || rep.ImageID != res.ID {
				t.Fatalf("verify after the retry: %v %+v", err, rep)
			}
		})
	}
}
