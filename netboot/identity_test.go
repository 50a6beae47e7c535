package netboot

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/identity"
	"github.com/imprint-dev/imprint/image"
)

func TestServeIdentityMap(t *testing.T) {
	dir := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := image.GenerateKey(filepath.Join(dir, "o"))
	signer, err := image.LoadSigner(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := image.ParseTrust([]string{pub})
	wrong, _ := image.ParseTrust([]string{other})
	conf := filepath.Join(dir, "identity.conf")
	text := []byte("class node[01-04] compute\n")
	os.WriteFile(conf, text, 0o644)

	// Unsigned: served, with a warning; refused under trust.
	_, sig, warn, err := LoadIdentity(conf, nil)
	if err != nil || sig != nil || !strings.Contains(warn, "agents ignore an unsigned map") {
		t.Fatalf("unsigned: sig %v warn %q err %v", sig, warn, err)
	}
	if _, _, _, err := LoadIdentity(conf, trust); !errors.Is(err, image.ErrUntrusted) {
		t.Fatalf("unsigned under --trust: %v", err)
	}
	os.WriteFile(conf+image.SignatureSuffix, signer.SignFile(text, "identity.conf"), 0o644)
	if _, _, _, err := LoadIdentity(conf, wrong); !errors.Is(err, image.ErrUntrusted) {
		t.Fatalf("signed by another key under --trust: %v", err)
	}
	c, sig, warn, err := LoadIdentity(conf, trust)
	if err != nil || warn != "" || sig == nil {
		t.Fatalf("signed: warn %q err %v", warn, err)
	}
	// A map that does not parse is never served.
	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(bad, []byte("class node[9-1] compute\n"), 0o644)
	if _, _, _, err := LoadIdentity(bad, nil); !errors.Is(err, identity.ErrConfig) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("malformed map: %v", err)
	}

	h := &HTTP{Store: t.TempDir(), Identity: c, IdentitySig: sig}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(p string) (int, string) {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(IdentityPath); code != 200 || body != string(text) {
		t.Fatalf("%s: %d %q", IdentityPath, code, body)
	}
	if code, body := get(IdentityPath + ".minisig"); code != 200 || body != string(sig) || trust.VerifyFile([]byte(text), []byte(body), "x") != nil {
		t.Fatalf("%s.minisig: %d %q", IdentityPath, code, body)
	}
	h2 := &HTTP{Store: t.TempDir()}
	srv2 := httptest.NewServer(h2)
	defer srv2.Close()
	for _, p := range []string{IdentityPath, IdentityPath + ".minisig"} {
		resp, err := http.Get(srv2.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("no --identity: %s answered %d, want 404", p, resp.StatusCode)
		}
	}
}

// A map whose signed end passes while the server runs is still handed out
// (the agents decide), and the server says so, at most once a minute.
func TestAnIdentityMapPastItsEndIsSaid(t *testing.T) {
	dir := t.TempDir()
	if _, err := image.GenerateKey(filepath.Join(dir, "k")); err != nil {
		t.Fatal(err)
	}
	signer, _ := image.LoadSigner(filepath.Join(dir, "k.key"))
	text := []byte("class node[01-04] compute\n")
	var mu sync.Mutex
	var said []string
	for _, tc := range []struct {
		name  string
		until time.Time
		lines int
	}{{"current", time.Now().Add(time.Hour), 0}, {"past its end", time.Now().Add(-time.Hour), 1}} {
		said = nil
		h := &HTTP{Store: t.TempDir(), Identity: text, IdentitySig: signer.SignFileUntil(text, "identity.conf", tc.until),
			Logf: func(f string, a ...any) { mu.Lock(); said = append(said, fmt.Sprintf(f, a...)); mu.Unlock() }}
		srv := httptest.NewServer(h)
		for range 3 {
			resp, err := http.Get(srv.URL + IdentityPath)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("%s: %d", tc.name, resp.StatusCode)
			}
		}
		srv.Close()
		mu.Lock()
		if len(said) != tc.lines || (tc.lines > 0 && !strings.Contains(said[0], "past its signed end")) {
			t.Errorf("%s: said %q, want %d line(s)", tc.name, said, tc.lines)
		}
		mu.Unlock()
	}
}
