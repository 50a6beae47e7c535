package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	if stamps, err := image.ReadFileStamps(sig); err != nil || time.Since(stamps.Signed) > time.Minute || time.Since(stamps.Signed) < 0 {
		t.Fatalf("key sign did not sign the time of signing: %+v %v", stamps, err)
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

// key sign --valid puts the end into the signature; serve --identity
// refuses a map past its end (its agents would), naming the end; a bad
// --valid is refused naming the flag.
func TestKeySignValidAndServeRefusesAnExpiredMap(t *testing.T) {
	dir := t.TempDir()
	if code, _, errs := run(t, "key", "generate", "--out", filepath.Join(dir, "site")); code != 0 {
		t.Fatal(errs)
	}
	conf := filepath.Join(dir, "identity.conf")
	os.WriteFile(conf, []byte("class node[01-04] compute\n"), 0o644)
	key := filepath.Join(dir, "site.key")
	for _, bad := range []string{"yesterday", "0d", "-5h", "2001-01-01T00:00:00Z"} {
		if code, _, errs := run(t, "key", "sign", "--key", key, "--valid", bad, conf); code == 0 || !strings.Contains(errs, "--valid") {
			t.Errorf("--valid %s: exit %d, %s", bad, code, errs)
		}
	}
	if code, _, errs := run(t, "key", "sign", "--key", key, "--valid", "30d", conf); code != 0 {
		t.Fatal(errs)
	}
	raw, _ := os.ReadFile(conf)
	sig, _ := os.ReadFile(conf + ".minisig")
	until, ok, err := image.FileValidUntil(sig)
	if err != nil || !ok || time.Until(until) < 29*24*time.Hour || time.Until(until) > 31*24*time.Hour {
		t.Fatalf("--valid 30d signed an end of %v (%v, %v)", until, ok, err)
	}
	trust, _ := image.ParseTrust([]string{filepath.Join(dir, "site.pub")})
	if err := trust.VerifyFile(raw, sig, "identity.conf"); err != nil {
		t.Fatal(err)
	}
	if err := trust.VerifyFileAt(raw, sig, "identity.conf", until.Add(time.Minute)); !errors.Is(err, image.ErrExpired) {
		t.Fatalf("a minute after its end: %v, want ErrExpired", err)
	}

	// A map whose end has passed: signed with the library, as key sign
	// refuses an end in the past.
	signer, _ := image.LoadSigner(key)
	os.WriteFile(conf+".minisig", signer.SignFileUntil(raw, "identity.conf", time.Now().Add(-time.Hour)), 0o644)
	st := filepath.Join(dir, "store")
	if _, err := store.CreateDir(st); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := run(t, "serve", "--store", st, "--image", "x", "--http", "127.0.0.1:0", "--identity", conf); code == 0 || !strings.Contains(errs, "--identity") || !strings.Contains(errs, "valid until") {
		t.Fatalf("serve --identity with an expired map: %d %s", code, errs)
	}
}
