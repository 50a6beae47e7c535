package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// key sign makes FILE.minisig that verifies under the key's public half;
// serve --identity refuses a map that does not parse, and under --trust
// one whose signature does not verify.
func TestKeySignAndServeIdentity(t *testing.T) {
	dir := t.TempDir()
	if code, _, errs := run(t, "key", "generate", "--out", filepath.Join(dir, "site")); code != 0 {
		t.Fatal(errs)
	}
	conf := filepath.Join(dir, "identity.conf")
	os.WriteFile(conf, []byte("class node[01-04] compute\n"), 0o644)
	if code, _, errs := run(t, "key", "sign", conf); code == 0 || !strings.Contains(errs, "--key") {
		t.Fatalf("sign without --key: %d %s", code, errs)
	}
	if code, out, errs := run(t, "key", "sign", "--key", filepath.Join(dir, "site.key"), conf); code != 0 || !strings.Contains(out, "identity.conf.minisig") {
		t.Fatalf("sign: %d %s %s", code, out, errs)
	}
	raw, _ := os.ReadFile(conf)
	sig, _ := os.ReadFile(conf + ".minisig")
	trust, _ := image.ParseTrust([]string{filepath.Join(dir, "site.pub")})
	if err := trust.VerifyFile(raw, sig, "identity.conf"); err != nil {
		t.Fatal(err)
	}

	st := filepath.Join(dir, "store")
	if _, err := store.CreateDir(st); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(bad, []byte("persistent /etc\n"), 0o644)
	if code, _, errs := run(t, "serve", "--store", st, "--image", "x", "--http", "127.0.0.1:0", "--identity", bad); code == 0 || !strings.Contains(errs, "--identity") || !strings.Contains(errs, "line 1") {
		t.Fatalf("serve --identity with a bad map: %d %s", code, errs)
	}
	os.WriteFile(conf, []byte("class node[01-04] gpu\n"), 0o644) // changed after signing
	if code, _, errs := run(t, "serve", "--store", st, "--image", "x", "--http", "127.0.0.1:0", "--identity", conf, "--trust", filepath.Join(dir, "site.pub")); code == 0 || !strings.Contains(errs, "not signed by a trusted key") {
		t.Fatalf("serve --identity with a map its --trust refuses: %d %s", code, errs)
	}
}
