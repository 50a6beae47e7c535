package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
)

func signedStore(t *testing.T) (st *Dir, raw []byte, pub, otherPub string) {
	t.Helper()
	dir := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	if otherPub, err = image.GenerateKey(filepath.Join(dir, "other")); err != nil {
		t.Fatal(err)
	}
	st, err = CreateDir(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	m := testManifest(t, st, randBytes(200<<10))
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	raw, _ = st.Manifest(context.Background(), "demo", "1")
	s, err := image.LoadSigner(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutSignature("demo", "1", sig); err != nil {
		t.Fatal(err)
	}
	return st, raw, pub, otherPub
}

func TestTrustVerify(t *testing.T) {
	st, raw, pub, otherPub := signedStore(t)
	sig, _ := st.Signature(context.Background(), "demo", "1")
	good, err := image.ParseTrust([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	both, _ := image.ParseTrust([]string{otherPub, pub})
	wrong, _ := image.ParseTrust([]string{otherPub})
	flipped := bytes.Clone(raw)
	flipped[len(flipped)/2] ^= 1
	for _, tc := range []struct {
		name     string
		trust    *image.Trust
		raw, sig []byte
		want     string // "" = accepted
	}{
		{"signed, trusted key", good, raw, sig, ""},
		{"signed, one of several keys", both, raw, sig, ""},
		{"no --trust accepts anything", nil, raw, nil, ""},
		{"unsigned", good, raw, nil, "carries no signature"},
		{"other key", wrong, raw, sig, "does not verify"},
		{"manifest changed after signing", good, flipped, sig, "does not verify"},
		{"garbage signature", good, raw, []byte("untrusted comment: x\nnot base64\n"), "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.trust.Verify(tc.raw, tc.sig)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, image.ErrUntrusted) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want image.ErrUntrusted with %q", err, tc.want)
			}
		})
	}
}

func TestKeyFilesAndBadKeys(t *testing.T) {
	dir := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.GenerateKey(filepath.Join(dir, "k")); err == nil {
		t.Fatal("GenerateKey overwrote a key")
	}
	txt, err := image.PublicKeyText(filepath.Join(dir, "k.pub"))
	if err != nil || txt != pub || strings.ContainsAny(txt, "\n ") {
		t.Fatalf("PublicKeyText = %q, %v; want %q", txt, err, pub)
	}
	os.WriteFile(filepath.Join(dir, "junk"), []byte("hello\n"), 0o644)
	for _, spec := range []string{"RWQnotakey", filepath.Join(dir, "junk"), filepath.Join(dir, "k.key")} {
		if _, err := image.ParseTrust([]string{spec}); err == nil {
			t.Errorf("ParseTrust(%q) accepted it", spec)
		}
	}
	if _, err := image.LoadSigner(filepath.Join(dir, "k.pub")); err == nil {
		t.Error("LoadSigner accepted a public key")
	}
}
