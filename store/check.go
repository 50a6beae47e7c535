package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/imprint-dev/imprint/image"
)

// CheckContents proves that every content of m adds up to its own content
// sha256: its chunks are read from this store in order, each checked
// against its name, zero chunks fed to the hash as zeros. A content for
// which skip says true is left out (one image.StoreContent just made, whose
// two hashes came from the same bytes).
//
// This is where a manifest's consistency is checked: once, when it enters
// a store (docs/format.md, "content.sha256"). A deploy then checks chunks
// only: the chunk list covers each content exactly, so a deploy whose
// every chunk matches wrote what the signed manifest describes, whatever
// its content sha256 says.
func (d *Dir) CheckContents(ctx context.Context, m *image.Manifest, skip func(*image.Content) bool) error {
	var dec *image.Decoder
	for _, nc := range m.Contents() {
		if skip != nil && skip(nc.Content) {
			continue
		}
		if dec == nil {
			var err error
			if dec, err = image.NewDecoder(); err != nil {
				return err
			}
			defer dec.Close()
		}
		if err := d.checkContent(ctx, dec, m, nc); err != nil {
			return fmt.Errorf("image %s:%s, %s: %w", m.Name, m.Version, nc.Label, err)
		}
	}
	return nil
}

func (d *Dir) checkContent(ctx context.Context, dec *image.Decoder, m *image.Manifest, nc image.NamedContent) error {
	c := nc.Content
	whole := sha256.New()
	buf := image.AlignedBuf(int(min(m.ChunkSize, c.Size)))
	var stored []byte
	for i, sum := range c.Chunks {
		if err := ctx.Err(); err != nil {
			return err
		}
		l := c.ChunkLen(i, m.ChunkSize)
		if sum == image.ZeroChunk {
			image.WriteZeros(whole, l)
			continue
		}
		var err error
		if stored, err = d.ReadChunk(ctx, sum, stored[:0]); err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
		data, err := dec.Decode(stored, sum, l, buf)
		if err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
		whole.Write(data)
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != c.SHA256 {
		return fmt.Errorf("%w: its chunks add up to sha256 %s, its content sha256 is %s", image.ErrInconsistent, got, c.SHA256)
	}
	return nil
}
