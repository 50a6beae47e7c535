package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"

	"github.com/imprint-dev/imprint/layout"
)

func testManifest(t *testing.T, st *Dir, data []byte) *image.Manifest {
	t.Helper()
	c, _, err := image.StoreContent(context.Background(), st, bytes.NewReader(data), int64(len(data)), 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &image.Manifest{
		Format: image.FormatVersion, Name: "demo", Version: "1", Created: time.Unix(1700000000, 0).UTC(), ChunkSize: 64 << 10,
		Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}},
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestStoreContentRoundTripDedupAndZeroChunks(t *testing.T) {
	st, err := CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	chunk := randBytes(64 << 10)
	// chunk, zeros, the same chunk again, a short tail
	data := append(append(append(append([]byte{}, chunk...), make([]byte, 64<<10)...), chunk...), randBytes(512)...)
	c, stats, err := image.StoreContent(context.Background(), st, bytes.NewReader(data), int64(len(data)), 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Chunks) != 4 || c.Chunks[1] != image.ZeroChunk || c.Chunks[0] != c.Chunks[2] {
		t.Fatalf("chunks %v", c.Chunks)
	}
	if stats.Zero != 1 || stats.New != 2 {
		t.Fatalf("stats %+v: want 1 zero and 2 new chunks", stats)
	}
	if c.SHA256 != image.HashBytes(data) {
		t.Fatal("whole-content hash is wrong")
	}
	dec, _ := image.NewDecoder()
	defer dec.Close()
	var got []byte
	for i, h := range c.Chunks {
		l := c.ChunkLen(i, 64<<10)
		if h == image.ZeroChunk {
			got = append(got, make([]byte, l)...)
			continue
		}
		stored, err := st.Chunk(context.Background(), h)
		if err != nil {
			t.Fatal(err)
		}
		b, err := dec.Decode(stored, h, l, nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("content read back from the store differs")
	}
	// A second store of the same content writes nothing new.
	_, stats, err = image.StoreContent(context.Background(), st, bytes.NewReader(data), int64(len(data)), 64<<10, nil)
	if err != nil || stats.New != 0 {
		t.Fatalf("second store: %+v %v", stats, err)
	}
}

func TestDecodeRejectsBadChunks(t *testing.T) {
	st, _ := CreateDir(t.TempDir())
	data := randBytes(100000)
	sum := image.HashBytes(data)
	if _, err := st.PutChunk(sum, data); err != nil {
		t.Fatal(err)
	}
	good, _ := st.Chunk(context.Background(), sum)
	dec, _ := image.NewDecoder()
	defer dec.Close()
	flipped := append([]byte{}, good...)
	flipped[len(flipped)/2] ^= 1
	other := image.HashBytes([]byte("other"))
	for _, tc := range []struct {
		name   string
		stored []byte
		sum    string
		n      int64
	}{
		{"corrupt", flipped, sum, int64(len(data))},
		{"truncated", good[:len(good)/2], sum, int64(len(data))},
		{"wrong hash", good, other, int64(len(data))},
		{"wrong length", good, sum, int64(len(data)) - 1},
		{"not zstd", []byte("hello"), sum, int64(len(data))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dec.Decode(tc.stored, tc.sum, tc.n, nil)
			if !errors.Is(err, image.ErrChecksum) {
				t.Fatalf("got %v, want image.ErrChecksum", err)
			}
			if !strings.Contains(err.Error(), tc.sum[:12]) {
				t.Fatalf("error %q does not name the chunk", err)
			}
		})
	}
}

func TestParseRejectsBadManifests(t *testing.T) {
	st, _ := CreateDir(t.TempDir())
	m := testManifest(t, st, randBytes(200704))
	good, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.Parse(good); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	edit := func(f func(m *image.Manifest)) []byte {
		c, _ := image.Parse(good)
		f(c)
		b, _ := c.Marshal()
		return b
	}
	for _, tc := range []struct {
		name, want string
		raw        []byte
	}{
		{"not json", "malformed", []byte("{nope")},
		{"no format", "no \"format\"", []byte(`{"name":"x"}`)},
		{"future format", "format version 3 is not supported", bytes.Replace(good, []byte(`"format": 2`), []byte(`"format": 3`), 1)},
		{"unknown field", "unknown field", bytes.Replace(good, []byte(`"format": 2,`), []byte(`"format": 2, "surprise": true,`), 1)},
		{"trailing data", "after top-level value", append(append([]byte{}, good...), []byte("{}")...)},
		{"missing chunk entry", "chunks listed", edit(func(m *image.Manifest) { m.Partitions[0].Content.Chunks = m.Partitions[0].Content.Chunks[1:] })},
		{"bad chunk hash", "neither a SHA-256", edit(func(m *image.Manifest) { m.Partitions[0].Content.Chunks[0] = "xyz" })},
		{"bad chunk size", "chunk size", edit(func(m *image.Manifest) { m.ChunkSize = 1000 })},
		{"path in name", "image name", edit(func(m *image.Manifest) { m.Name = "../etc" })},
		{"image partition without content", "has no content", edit(func(m *image.Manifest) { m.Partitions[0].Content = nil })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := image.Parse(tc.raw)
			if !errors.Is(err, image.ErrFormat) {
				t.Fatalf("got %v, want image.ErrFormat", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestStoreManifestsAndResolve(t *testing.T) {
	root := t.TempDir()
	st, _ := CreateDir(root)
	m := testManifest(t, st, randBytes(102400))
	id, err := st.PutManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	m2 := *m
	m2.Version, m2.Created = "2", m.Created.Add(time.Hour)
	if _, err := st.PutManifest(&m2); err != nil {
		t.Fatal(err)
	}
	// Versions are immutable.
	m3 := *m
	m3.Created = m.Created.Add(time.Minute)
	if _, err := st.PutManifest(&m3); !errors.Is(err, ErrExists) {
		t.Fatalf("rewriting version 1 with other content: %v, want ErrExists", err)
	}
	ctx := context.Background()
	r, err := Resolve(ctx, st, "demo", "1")
	if err != nil || r.ID != id {
		t.Fatalf("resolve demo:1 = %v, %v", r, err)
	}
	r, err = Resolve(ctx, st, "demo", "")
	if err != nil || r.Manifest.Version != "2" {
		t.Fatalf("latest = %v, %v; want version 2", r, err)
	}
	for _, tc := range []struct{ name, version, want string }{
		{"nope", "", `image "nope"`},
		{"nope", "1", `image "nope"`},
		{"demo", "9", `version "9"`},
		{"demo", "../../x", "image version"},
	} {
		_, err := Resolve(ctx, st, tc.name, tc.version)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("resolve %s:%s: %v, want %q", tc.name, tc.version, err, tc.want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "index.json")); err != nil || !bytes.Contains(b, []byte(id)) {
		t.Fatalf("index.json does not list the image: %v", err)
	}
	// A manifest that was tampered with in the store no longer parses as the
	// same image, and one that does not name itself is refused.
	p := filepath.Join(root, "images", "demo", "1", "manifest.json")
	raw, _ := os.ReadFile(p)
	os.WriteFile(p, bytes.Replace(raw, []byte(`"version": "1"`), []byte(`"version": "2"`), 1), 0o644)
	if _, err := Resolve(ctx, st, "demo", "1"); !errors.Is(err, image.ErrFormat) {
		t.Fatalf("manifest naming another version: %v", err)
	}
}

// The default layout lives beside the manifest: Resolve gives it, and an
// image without one falls back to the layout its manifest implies.
func TestLayoutBesideTheManifest(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st, _ := CreateDir(root)
	m := testManifest(t, st, randBytes(102400))
	id, err := st.PutManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Resolve(ctx, st, "demo", "1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Layout != nil {
		t.Fatal("a layout without layout.json")
	}
	// ESP, the content, state, and scratch taking the rest.
	if d := r.DefaultLayout(); len(d.Partitions) != 4 || d.Partitions[0].Size != image.DefaultESPSize || d.Partitions[1].Size != 1<<20 || d.Partitions[2].Name != "state" || !d.Partitions[3].Rest {
		t.Fatalf("derived layout: %+v", d)
	}
	small := layout.Layout{Partitions: []layout.Spec{
		{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: 256 << 20},
		{Name: "root", Type: layout.TypeRootX86_64, Role: layout.RoleImage, Size: 64 << 10},
	}}
	if err := st.PutLayout("demo", "1", small); err == nil || !strings.Contains(err.Error(), `image partition "root"`) {
		t.Fatalf("a layout too small for the content: %v", err)
	}
	small.Partitions[1].Size = 2 << 20
	if err := st.PutLayout("demo", "1", small); err != nil {
		t.Fatal(err)
	}
	r, err = Resolve(ctx, st, "demo", "1")
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != id || r.Layout == nil || r.DefaultLayout().Partitions[0].Size != 256<<20 {
		t.Fatalf("after PutLayout: id %s (was %s), layout %+v", r.ID, id, r.Layout)
	}
	os.WriteFile(filepath.Join(root, "images", "demo", "1", LayoutFile), []byte(`{"partitions": [{"name": "esp", "size": "big"}]}`), 0o644)
	if _, err := Resolve(ctx, st, "demo", "1"); err == nil || !strings.Contains(err.Error(), "layout.json") || !errors.Is(err, layout.ErrBadLayout) {
		t.Fatalf("a damaged layout.json: %v", err)
	}
}
