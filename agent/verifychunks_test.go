package agent

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
)

// A local boot with imprint.verify=chunks whose network does not come up
// hands its root server no sources: a drifted chunk's reads then fail
// (EIO) at once instead of waiting for a source it cannot reach. With the
// network up, the sources are handed on.
func TestVerifyChunksWithTheNetworkDownServesWithoutSources(t *testing.T) {
	srcs := []string{"http://10.0.2.2:8080/"}
	for _, tc := range []struct {
		name string
		up   error
		want []string
	}{
		{"network up", nil, srcs},
		{"network down", errors.New("no DHCP lease on any interface"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &Agent{Console: io.Discard, Params: Params{Mode: ModeLocal, Root: "PARTUUID=a", Verify: VerifyChunks, Sources: srcs}}
			called := false
			a.localNetwork(t.Context(), func(context.Context, *Agent) error { called = true; return tc.up })
			if !called {
				t.Fatal("the network was not brought up for imprint.verify=chunks with sources")
			}
			if got := a.chunkSources(); !slices.Equal(got, tc.want) {
				t.Errorf("the root server's sources: %q, want %q", got, tc.want)
			}
		})
	}
}

// espMap is an ESP's files by name.
type espMap map[string][]byte

func (e espMap) Exists(name string) bool { _, ok := e[name]; return ok }
func (e espMap) ReadFile(name string) ([]byte, error) {
	b, ok := e[name]
	if !ok {
		return nil, os.ErrNotExist
	}
	return b, nil
}

// With trusted keys, imprint.verify=chunks serves only a deploy record
// whose manifest a trusted key signed: a missing signature, or one by
// another key, is refused with image.ErrUntrusted. Without keys any
// record passes.
func TestVerifyChunksChecksTheRecordsSignatureWithTrustedKeys(t *testing.T) {
	dir := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.GenerateKey(filepath.Join(dir, "o")); err != nil {
		t.Fatal(err)
	}
	c := &image.Content{Size: 64 << 10, SHA256: image.HashBytes(make([]byte, 64<<10)), Chunks: []string{image.ZeroChunk}}
	m := &image.Manifest{Format: image.FormatVersion, Name: "n", Version: "1", Created: time.Unix(1700000000, 0).UTC(), ChunkSize: 64 << 10,
		Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}}}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sign := func(key string) []byte {
		s, err := image.LoadSigner(filepath.Join(dir, key+".key"))
		if err != nil {
			t.Fatal(err)
		}
		sig, err := s.Sign(raw)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	const sf = "imprint/slot-a/manifest.json.minisig"
	for _, tc := range []struct {
		name  string
		trust []string
		esp   espMap
		ok    bool
	}{
		{"no keys, no signature", nil, espMap{}, true},
		{"signed by the trusted key", []string{pub}, espMap{sf: sign("k")}, true},
		{"signed by another key", []string{pub}, espMap{sf: sign("o")}, false},
		{"no signature", []string{pub}, espMap{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &Agent{Console: io.Discard, Root: t.TempDir(), Params: Params{Mode: ModeLocal, Verify: VerifyChunks, Trust: tc.trust}}
			err := a.checkRecordSignature(raw, tc.esp, sf)
			if tc.ok != (err == nil) {
				t.Fatalf("checkRecordSignature: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, image.ErrUntrusted) {
				t.Errorf("refused for another reason: %v", err)
			}
		})
	}
}
