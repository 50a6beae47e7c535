package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestCompareCountsOnlyChunksTheOldImageLacks: a chunk that moved is
// reused, a zero chunk is never fetched, a changed chunk is fetched once
// even where it repeats.
func TestCompareCountsOnlyChunksTheOldImageLacks(t *testing.T) {
	const cs = 4096
	blk := func(b byte) []byte { return bytes.Repeat([]byte{b}, cs) }
	dir := t.TempDir()
	old := bytes.Join([][]byte{blk(1), blk(2), blk(0), blk(3)}, nil)
	cur := bytes.Join([][]byte{blk(2), blk(1), blk(9), blk(9), blk(0)}, nil)
	op, np := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	if err := os.WriteFile(op, old, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(np, cur, 0o644); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	r, err := compare(context.Background(), op, np, cs, enc)
	if err != nil {
		t.Fatal(err)
	}
	if r.chunks != 5 || r.zero != 1 || r.moved != 5 || r.fetched != 1 || r.fetchRaw != cs || r.distinct != 3 {
		t.Fatalf("got %+v, want 5 chunks, 1 zero, 5 moved, 1 fetched of 4096 bytes, 3 distinct", r)
	}
	if r.fetchZstd <= 0 || r.fetchZstd >= cs {
		t.Fatalf("fetchZstd = %d, want a compressed size of a repeated byte", r.fetchZstd)
	}
}

func TestParseSizesRejectsWhatIsNotAChunkSize(t *testing.T) {
	for _, s := range []string{"1000", "0", "-4K", "4X", "4K,"} {
		if _, err := parseSizes(s); err == nil {
			t.Errorf("parseSizes(%q) accepted it", s)
		}
	}
	got, err := parseSizes("64K,1M")
	if err != nil || len(got) != 2 || got[0] != 64<<10 || got[1] != 1<<20 {
		t.Fatalf("parseSizes(64K,1M) = %v, %v", got, err)
	}
}
