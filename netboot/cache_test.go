package netboot

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/imprint-dev/imprint/fetch/swarm"
)

// TestCacheHeadersLetAProxyCacheTheStore proves what an HTTP cache in
// front of the server is told: immutable chunks, manifests and boot files,
// a short-lived index, a never-stored announce, and for each a validator
// that a revalidation (If-None-Match) answers with 304, and ranges.
func TestCacheHeadersLetAProxyCacheTheStore(t *testing.T) {
	root, m, _ := testStore(t)
	h := &HTTP{Store: root, Public: "http://127.0.0.1/", Decider: Static{}, SwarmTracker: &swarm.Tracker{}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	do := func(path string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, b
	}
	sum := m.Partitions[0].Content.Chunks[0]
	tests := []struct {
		name, path, cache, etag string // etag "" means any non-empty one
		ranges                  bool
	}{
		{"chunk, named by its hash", "/chunks/" + sum[:2] + "/" + sum, ImmutableCache, `"` + sum + `"`, true},
		{"manifest of a named version", "/images/node/1/manifest.json", ImmutableCache, "", true},
		{"layout beside it", "/images/node/1/layout.json", SidecarCache, "", false},
		{"index, which says what is newest", "/index.json", IndexCache, "", false},
		{"boot file, by its content hash", "/boot/node/1/vmlinuz", ImmutableCache, `"` + m.Boot.Kernel.SHA256 + `"`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(tc.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d", tc.path, resp.StatusCode)
			}
			if got := resp.Header.Get("Cache-Control"); got != tc.cache {
				t.Errorf("Cache-Control %q, want %q", got, tc.cache)
			}
			etag := resp.Header.Get("ETag")
			if etag == "" || etag[0] != '"' || (tc.etag != "" && etag != tc.etag) {
				t.Fatalf("ETag %q, want a strong one %s", etag, tc.etag)
			}
			if again, _ := do(tc.path); again.Header.Get("ETag") != etag {
				t.Errorf("the ETag changed between two requests: %q, %q", etag, again.Header.Get("ETag"))
			}
			if r, b := do(tc.path, "If-None-Match", etag); r.StatusCode != http.StatusNotModified || len(b) != 0 {
				t.Errorf("revalidation: %d with %d bytes, want 304", r.StatusCode, len(b))
			}
			if r, _ := do(tc.path, "If-None-Match", `"something-else"`); r.StatusCode != http.StatusOK {
				t.Errorf("a stale validator: %d, want 200", r.StatusCode)
			}
			if tc.ranges && len(body) > 4 {
				r, b := do(tc.path, "Range", "bytes=1-3")
				if r.StatusCode != http.StatusPartialContent || string(b) != string(body[1:4]) {
					t.Errorf("range: %d %q, want 206 %q", r.StatusCode, b, body[1:4])
				}
			}
		})
	}
	if r, _ := do("/swarm/announce"); r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("announce: Cache-Control %q, want no-store", r.Header.Get("Cache-Control"))
	}
}
