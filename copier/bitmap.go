package copier

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
)

// Bitmap records which chunks of one content are done. It is safe for
// concurrent use and marshals compactly (base64 of a bit set) for the
// journal.
type Bitmap struct {
	mu   sync.Mutex
	n    int
	bits []byte
}

// NewBitmap makes an empty bitmap of n chunks.
func NewBitmap(n int) *Bitmap { return &Bitmap{n: n, bits: make([]byte, (n+7)/8)} }

// Set marks chunk i.
func (b *Bitmap) Set(i int) {
	b.mu.Lock()
	b.bits[i/8] |= 1 << (i % 8)
	b.mu.Unlock()
}

// Has reports whether chunk i is marked.
func (b *Bitmap) Has(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bits[i/8]&(1<<(i%8)) != 0
}

// Count is the number of marked chunks.
func (b *Bitmap) Count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := 0
	for i := range b.n {
		if b.bits[i/8]&(1<<(i%8)) != 0 {
			c++
		}
	}
	return c
}

// Len is the number of chunks the bitmap covers.
func (b *Bitmap) Len() int { return b.n }

// Clone copies the bitmap, so a snapshot can be journaled while writers go on.
func (b *Bitmap) Clone() *Bitmap {
	b.mu.Lock()
	defer b.mu.Unlock()
	return &Bitmap{n: b.n, bits: append([]byte(nil), b.bits...)}
}

type bitmapJSON struct {
	N    int    `json:"n"`
	Bits string `json:"bits"`
}

// MarshalJSON implements json.Marshaler.
func (b *Bitmap) MarshalJSON() ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return json.Marshal(bitmapJSON{N: b.n, Bits: base64.StdEncoding.EncodeToString(b.bits)})
}

// UnmarshalJSON implements json.Unmarshaler.
func (b *Bitmap) UnmarshalJSON(p []byte) error {
	var j bitmapJSON
	if err := json.Unmarshal(p, &j); err != nil {
		return err
	}
	bits, err := base64.StdEncoding.DecodeString(j.Bits)
	if err != nil {
		return err
	}
	if j.N < 0 || len(bits) != (j.N+7)/8 {
		return fmt.Errorf("bitmap of %d chunks has %d bytes", j.N, len(bits))
	}
	b.n, b.bits = j.N, bits
	return nil
}
