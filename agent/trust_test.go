package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

// TestAgentTrust: keys come from imprint.trust= or, winning over it, from
// the initramfs; an image they did not sign is refused before any fetch.
func TestAgentTrust(t *testing.T) {
	dir := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := image.GenerateKey(filepath.Join(dir, "o"))
	st, _ := store.CreateDir(filepath.Join(dir, "store"))
	data := bytes.Repeat([]byte{7}, 128<<10)
	c, _, err := image.StoreContent(context.Background(), st, bytes.NewReader(data), int64(len(data)), 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &image.Manifest{Format: image.FormatVersion, Name: "n", Version: "1", Created: time.Unix(1700000000, 0).UTC(), ChunkSize: 64 << 10,
		Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}}}
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	raw, _ := st.Manifest(context.Background(), "n", "1")
	s, _ := image.LoadSigner(filepath.Join(dir, "k.key"))
	sig, _ := s.Sign(raw)
	st.PutSignature("n", "1", sig)

	p, err := ParseCmdline("imprint.source=http://x/ imprint.image=n:1 imprint.trust=" + pub + "," + other)
	if err != nil || len(p.Trust) != 2 || p.Trust[0] != pub {
		t.Fatalf("imprint.trust= parsed as %v, %v", p.Trust, err)
	}
	for _, tc := range []struct {
		name    string
		cmdline []string
		initrd  string // key baked into the initramfs
		ok      bool
	}{
		{"no keys: anything runs", nil, "", true},
		{"command-line key signed it", []string{pub}, "", true},
		{"command-line key did not", []string{other}, "", false},
		{"initramfs key wins over the command line", []string{other}, pub, true},
		{"a command-line key cannot override the initramfs", []string{pub}, other, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.initrd != "" {
				os.MkdirAll(filepath.Join(root, filepath.Dir(TrustFile)), 0o755)
				os.WriteFile(filepath.Join(root, TrustFile), []byte(tc.initrd+"\n"), 0o644)
			}
			a := &Agent{Console: io.Discard, Root: root, Params: Params{Image: "n:1", Trust: tc.cmdline}}
			_, err := a.resolve(context.Background(), []store.Source{st})
			if tc.ok != (err == nil) {
				t.Fatalf("resolve: %v", err)
			}
			if err != nil && !errors.Is(err, image.ErrUntrusted) {
				t.Fatalf("refused for another reason: %v", err)
			}
		})
	}
}
