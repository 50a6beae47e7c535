package builder

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// TestBuildSignsTheStoredManifest builds from a raw partition image with
// and without a Signer: the signature must verify against the manifest
// bytes a client fetches, under the signer's public key only.
func TestBuildSignsTheStoredManifest(t *testing.T) {
	dir := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(dir, "master"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := image.GenerateKey(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := image.LoadSigner(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(dir, "root.img")
	data := make([]byte, 64<<10)
	copy(data, "a root partition, short but not empty")
	if err := os.WriteFile(part, data, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := store.CreateDir(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		version string
		signer  *image.Signer
	}{{"signed", signer}, {"unsigned", nil}} {
		res, err := Build(ctx, Options{Store: st, Name: "demo", Version: tc.version, Signer: tc.signer,
			Partitions: []PartitionFile{{Name: "root", Path: part}}})
		if err != nil {
			t.Fatalf("%s: %v", tc.version, err)
		}
		if res.Signed != (tc.signer != nil) {
			t.Errorf("%s: Result.Signed = %v", tc.version, res.Signed)
		}
		raw, err := st.Manifest(ctx, "demo", tc.version)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := st.Signature(ctx, "demo", tc.version)
		if tc.signer == nil {
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("unsigned build has a signature (%v)", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		trust, _ := image.ParseTrust([]string{pub})
		if err := trust.Verify(raw, sig); err != nil {
			t.Errorf("signature does not verify under the signer's key: %v", err)
		}
		wrong, _ := image.ParseTrust([]string{other})
		if err := wrong.Verify(raw, sig); !errors.Is(err, image.ErrUntrusted) {
			t.Errorf("signature verifies under another key: %v", err)
		}
	}
}
