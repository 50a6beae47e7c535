package netboot

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/store"
)

// A diskless node gets the newest version at its next boot: `serve --image
// NAME` without a version follows every build into the store (the iPXE
// script, and "newest" over HTTP for agents and syncs). With a pin, newest
// is the pin: the index hides later versions, which stay fetchable by name
// for canaries; moving the pin moves the fleet.
func TestDisklessFollowsTheNewestBuildAndThePin(t *testing.T) {
	root := t.TempDir()
	t0 := time.Now().Add(-time.Hour)
	bootStore(t, root, "9", t0, []byte("kernel nine"), []byte("an initrd"))
	h := &HTTP{Store: root, Public: "http://10.0.0.1:8080/", Decider: Static{Default: Decision{Image: "node", Mode: Diskless}}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	ctx := context.Background()
	boots := func(want string) {
		t.Helper()
		s, err := h.Script(ctx, mac)
		if err != nil || !strings.Contains(s, "imprint.image=node:"+want) || !strings.Contains(s, "/boot/node/"+want+"/vmlinuz") {
			t.Fatalf("the next boot should run node:%s: %v\n%s", want, err, s)
		}
		hs, _ := store.OpenHTTP(srv.URL)
		if res, err := store.Resolve(ctx, hs, "node", ""); err != nil || res.Manifest.Version != want {
			t.Fatalf("newest over HTTP: %v, want %s (%v)", res, want, err)
		}
	}
	boots("9")
	// Version 10 is newer than 9 (the version order, not the bytes, nor
	// the creation time: it was made from an older tree).
	bootStore(t, root, "10", t0.Add(-time.Minute), []byte("kernel ten"), []byte("an initrd"))
	boots("10")

	h.Pins = map[string]string{"node": "9"}
	if err := h.CheckPins(ctx); err != nil {
		t.Fatal(err)
	}
	boots("9")
	resp, b := get(t, http.MethodGet, srv.URL+"/index.json")
	var idx store.Index
	if err := json.Unmarshal(b, &idx); err != nil || resp.StatusCode != 200 {
		t.Fatalf("index.json: %d %v %s", resp.StatusCode, err, b)
	}
	if vs := idx.Images["node"]; len(vs) != 1 || vs[0].Version != "9" {
		t.Errorf("pinned index.json lists %+v; want version 9 only", vs)
	}
	if resp, _ := get(t, http.MethodGet, srv.URL+"/images/node/10/manifest.json"); resp.StatusCode != 200 {
		t.Errorf("a canary asking for node:10 by name: %d", resp.StatusCode)
	}
	h.Pins["node"] = "10"
	boots("10")
	h.Pins["node"] = "11"
	if err := h.CheckPins(ctx); err == nil || !strings.Contains(err.Error(), "--pin node=11") {
		t.Errorf("a pin to a missing version: %v", err)
	}
}
