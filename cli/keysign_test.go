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

// key sign refuses to sign over a signature signed later than its clock
// (a signing host whose clock was ahead, or this one's behind): nodes that
// took that map would refuse the new one. The error names the file and
// both times; --allow-older signs anyway.
func TestKeySignRefusesToSignBeforeTheLastSignature(t *testing.T) {
	dir := t.TempDir()
	if code, _, errs := run(t, "key", "generate", "--out", filepath.Join(dir, "site")); code != 0 {
		t.Fatal(errs)
	}
	key := filepath.Join(dir, "site.key")
	conf := filepath.Join(dir, "identity.conf")
	os.WriteFile(conf, []byte("class node[01-04] compute\n"), 0o644)
	s, err := image.LoadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	raw, _ := os.ReadFile(conf)
	stamps := func() image.FileStamps {
		b, err := os.ReadFile(conf + ".minisig")
		if err != nil {
			t.Fatal(err)
		}
		st, err := image.ReadFileStamps(b)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	os.WriteFile(conf+".minisig", s.SignFileAt(raw, "identity.conf", image.FileStamps{Signed: future}), 0o644)
	code, _, errs := run(t, "key", "sign", "--key", key, conf)
	if code == 0 || !strings.Contains(errs, conf+".minisig was signed 2099-01-01T00:00:00Z, later than this machine's clock says now ("+time.Now().UTC().Format("2006-01-02")) || !strings.Contains(errs, "--allow-older") {
		t.Fatalf("signing over a signature from 2099: exit %d, %s", code, errs)
	}
	if st := stamps(); !st.Signed.Equal(future) {
		t.Fatalf("the refused signing replaced the signature: %+v", st)
	}
	if code, _, errs := run(t, "key", "sign", "--key", key, "--allow-older", conf); code != 0 {
		t.Fatalf("--allow-older: exit %d, %s", code, errs)
	}
	if st := stamps(); time.Since(st.Signed) > time.Minute {
		t.Fatalf("--allow-older did not sign now: %+v", st)
	}
	// Signed earlier than now, or without the stamp: simply replaced.
	os.WriteFile(conf+".minisig", s.SignFileAt(raw, "identity.conf", image.FileStamps{}), 0o644)
	if code, _, errs := run(t, "key", "sign", "--key", key, conf); code != 0 {
		t.Fatalf("over an unstamped signature: exit %d, %s", code, errs)
	}
	if code, _, errs := run(t, "key", "sign", "--key", key, conf); code != 0 {
		t.Fatalf("over its own signature: exit %d, %s", code, errs)
	}
}
