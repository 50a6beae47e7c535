package netboot

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/deploy"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
)

// TestLiveServesTooEarlyThenTheDeployedDisk follows deploy --serve: before
// the deploy partitions the disk every request is "too early"; the deploy
// hands its disk over while writing; afterwards the finished disk is served
// until the context ends, and Stop closes the port.
func TestLiveServesTooEarlyThenTheDeployedDisk(t *testing.T) {
	root, m, _ := testStore(t)
	ctx := context.Background()
	st := &store.Dir{Root: root}
	img, err := store.Resolve(ctx, st, m.Name, m.Version)
	if err != nil {
		t.Fatal(err)
	}
	o := deploy.Options{Sources: []store.Source{st}, Image: img, Disk: filepath.Join(t.TempDir(), "disk.img"), Size: 128 << 20,
		Boot: deploy.BootOptions{Skip: true}}
	l, err := StartLive("127.0.0.1:0", &o, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			l.Stop()
		}
	})
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(l.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get("index.json"); code != http.StatusTooEarly {
		t.Fatalf("before the deploy: index.json %d, want 425 Too Early", code)
	}

	handed := false
	live := o.Live
	o.Live = func(d *ondisk.DiskSource) { handed = true; live(d) }
	if _, err := deploy.Deploy(ctx, o); err != nil {
		t.Fatal(err)
	}
	if !handed {
		t.Fatal("the deploy never handed its disk to the server")
	}

	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.ServeDeployed(sctx, o.Disk) }()
	var idx store.Index
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, b := get("index.json")
		if code == http.StatusOK && json.Unmarshal(b, &idx) == nil && len(idx.Images[m.Name]) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deployed disk's index: %d %s", code, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sum := m.Partitions[0].Content.Chunks[0]
	if code, b := get("chunks/" + sum[:2] + "/" + sum); code != http.StatusOK || len(b) == 0 {
		t.Errorf("chunk %s from the deployed disk: %d", sum, code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if _, err := http.Get(l.URL() + "index.json"); err == nil {
		t.Error("still serving after Stop")
	}

	if err := l.ServeDeployed(ctx, filepath.Join(t.TempDir(), "missing.img")); err == nil {
		t.Error("serving a missing disk did not fail")
	}
}
