package cli

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/netboot"
)

// lying serves a store but with every chunk's bytes replaced by another
// valid chunk: a peer that tries to slip in other content.
func lying(store string, other string) http.Handler {
	real := &netboot.HTTP{Store: store, Decider: netboot.Static{}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/chunks/") {
			b, _ := os.ReadFile(other)
			w.Write(b)
			return
		}
		real.ServeHTTP(w, r)
	})
}

func TestDeployFromHTTPAndALyingPeer(t *testing.T) {
	b := smallImage(t)
	good := httptest.NewServer(&netboot.HTTP{Store: b.store, Decider: netboot.Static{}})
	defer good.Close()
	c0 := chunkPath(b, 0)
	liar := httptest.NewServer(lying(b.store, c0))
	defer liar.Close()

	disk := filepath.Join(t.TempDir(), "disk.img")
	out := mustRun(t, "deploy", "--from", good.URL, "--image", b.name, "--disk", disk, "--size", "100M", "--yes")
	if !strings.Contains(out, "verified by read-back") {
		t.Fatalf("deploy over HTTP: %s", out)
	}
	if code, out, _ := run(t, "verify", "--disk", disk); code != 0 {
		t.Fatalf("verify: %s", out)
	}

	// The liar first, the honest server second: every chunk the liar sends
	// fails its hash and comes from the second source instead.
	disk2 := filepath.Join(t.TempDir(), "disk2.img")
	code, out, errs := run(t, "deploy", "--from", liar.URL, "--from", good.URL, "--image", b.name, "--disk", disk2, "--size", "100M", "--yes")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "checksum mismatch") || !strings.Contains(errs, "trying the next source") {
		t.Errorf("the liar's chunks were not reported:\n%s", errs)
	}
	root, _ := onDisk(t, disk2).State.Table.Find("root")
	if sha256Range(t, disk2, root.Start, b.m.Partitions[0].Content.Size) != b.m.Partitions[0].Content.SHA256 {
		t.Fatal("the liar changed the result")
	}
	// Chunk 0's bytes are what the liar sends for every chunk, so for
	// chunk 0 it happens to tell the truth; all else came from the peer.
	if !strings.Contains(out, "from "+good.URL) || !strings.Contains(out, "256.0 KiB from "+liar.URL) {
		t.Errorf("summary:\n%s", out)
	}

	// Only the liar: nothing completes.
	disk3 := filepath.Join(t.TempDir(), "disk3.img")
	if code, _, errs := run(t, "deploy", "--from", liar.URL, "--image", b.name, "--disk", disk3, "--size", "100M", "--yes"); code == 0 || !strings.Contains(errs, "checksum mismatch") {
		t.Fatalf("a lying only source: exit %d %s", code, errs)
	}
	notComplete(t, disk3)
}
