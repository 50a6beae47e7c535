package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
)

// Prune keeps the newest versions and every chunk they name, and drops
// the older versions and the chunks only they named.
func TestPruneDropsOldVersionsAndTheChunksOnlyTheyNamed(t *testing.T) {
	ctx := context.Background()
	d, err := CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4*64<<10)
	rand.Read(data)
	contents := map[string]*image.Content{}
	for i, v := range []string{"1", "2", "3"} {
		rand.Read(data[:64<<10]) // each version has one chunk of its own
		c, _, err := image.StoreContent(ctx, d, bytes.NewReader(data), int64(len(data)), 64<<10, nil)
		if err != nil {
			t.Fatal(err)
		}
		contents[v] = c
		m := &image.Manifest{Format: image.FormatVersion, Name: "n", Version: v, Created: time.Unix(1700000000+int64(i), 0).UTC(), ChunkSize: 64 << 10,
			Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}}}
		if _, err := d.PutManifest(m); err != nil {
			t.Fatal(err)
		}
	}
	dry, err := d.Prune(ctx, PruneOptions{Keep: 2, DryRun: true})
	if err != nil || len(dry.Versions) != 1 || dry.Chunks != 1 || !d.HasChunk(contents["1"].Chunks[0]) {
		t.Fatalf("dry run: %v %+v", err, dry)
	}
	res, err := d.Prune(ctx, PruneOptions{Keep: 2})
	if err != nil || len(res.Versions) != 1 || res.Versions[0] != "n:1" || res.Chunks != 1 || res.KeptChunks != 5 {
		t.Fatalf("prune: %v %+v", err, res)
	}
	if d.HasChunk(contents["1"].Chunks[0]) || !d.HasChunk(contents["2"].Chunks[0]) || !d.HasChunk(contents["1"].Chunks[1]) {
		t.Fatal("the wrong chunks went")
	}
	if _, err := Resolve(ctx, d, "n", "1"); err == nil {
		t.Fatal("version 1 is still there")
	}
	if _, err := Resolve(ctx, d, "n", "3"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Prune(ctx, PruneOptions{Keep: 0}); err == nil {
		t.Fatal("--keep 0 accepted")
	}
}
