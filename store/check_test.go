package store

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
)

// A manifest enters a store only if each content adds up to its content
// sha256; one that does not is refused, naming the content and both hashes,
// and nothing is written. The contents the builder made are not read again.
func TestPutManifestRefusesAnInconsistentManifest(t *testing.T) {
	data := randBytes(3 * 64 << 10)
	clear(data[64<<10 : 128<<10]) // a zero chunk, hashed as zeros
	for _, tc := range []struct {
		name string
		put  func(st *Dir, m *image.Manifest) error
	}{
		{"PutManifest", func(st *Dir, m *image.Manifest) error { _, err := st.PutManifest(m); return err }},
		{"PutManifestRaw", func(st *Dir, m *image.Manifest) error {
			raw, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			_, err = st.PutManifestRaw(raw)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := CreateDir(t.TempDir())
			good := testManifest(t, st, data)
			if good.Partitions[0].Content.Chunks[1] != image.ZeroChunk {
				t.Fatal("chunk 1 of the test data is not a zero chunk")
			}
			lying := *good
			lying.Version = "2"
			c := *good.Partitions[0].Content
			c.SHA256 = image.HashBytes([]byte("other content"))
			lying.Partitions = []image.Partition{good.Partitions[0]}
			lying.Partitions[0].Content = &c
			err := tc.put(st, &lying)
			if !errors.Is(err, image.ErrInconsistent) {
				t.Fatalf("an inconsistent manifest: %v, want image.ErrInconsistent", err)
			}
			for _, want := range []string{"demo:2", "partition root", c.SHA256, good.Partitions[0].Content.SHA256} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if _, err := os.Stat(st.manifestPath("demo", "2")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused manifest was written (%v)", err)
			}
			if err := tc.put(st, good); err != nil {
				t.Fatalf("the consistent manifest: %v", err)
			}
		})
	}
	// A content listed as made by StoreContent is taken on the caller's
	// word (the builder's two hashes come from the same bytes).
	st, _ := CreateDir(t.TempDir())
	m := testManifest(t, st, data)
	m.Partitions[0].Content.SHA256 = image.HashBytes(nil)
	if _, err := st.PutManifest(m, m.Partitions[0].Content); err != nil {
		t.Fatalf("a made content is not read again: %v", err)
	}
}

// The check reads the store's chunks: a missing one is an error naming it,
// not a pass.
func TestPutManifestRawNeedsTheChunks(t *testing.T) {
	src, _ := CreateDir(t.TempDir())
	m := testManifest(t, src, randBytes(64<<10))
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := CreateDir(t.TempDir())
	if _, err := dst.PutManifestRaw(raw); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), m.Partitions[0].Content.Chunks[0]) {
		t.Fatalf("a manifest without its chunks: %v, want ErrNotFound naming the chunk", err)
	}
}
