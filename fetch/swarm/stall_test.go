package swarm

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

// bigImage stores a one-partition image of size bytes of random chunks
// of chunk bytes.
func bigImage(t testing.TB, size, chunk int64) (*store.Dir, *image.Manifest, [][]byte) {
	t.Helper()
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root := make([]byte, size)
	rand.Read(root)
	c, _, err := image.StoreContent(t.Context(), st, bytes.NewReader(root), size, chunk, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &image.Manifest{Format: image.FormatVersion, Name: "big", Version: "1", Created: time.Unix(1700000000, 0).UTC(),
		ChunkSize: chunk, Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}}}
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	return st, m, [][]byte{root}
}

// One seeding peer, one fetching node, no web seed: the whole image
// comes peer to peer (the engine once stopped after 31 pieces).
func TestOneSeedOneNodeWholeImage(t *testing.T) {
	for _, tc := range []struct {
		name        string
		size, chunk int64
	}{
		{"16MiB of 64KiB chunks", 16 << 20, 64 << 10},
		{"32MiB of 1MiB chunks", 32 << 20, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, m, want := bigImage(t, tc.size, tc.chunk)
			srv := newServer(t, st)
			srv.seedOff.Store(true)
			newNode(t, "127.0.0.2", m, srv.URL, want, false)
			start := time.Now()
			b := newNode(t, "127.0.0.3", m, srv.URL, nil, false)
			total := len(b.sess.Tor.Pieces)
			if err := b.sess.Wait(t.Context(), 10*time.Second); err != nil {
				t.Fatalf("%v (%d of %d pieces came)", err, total-b.sess.Missing(), total)
			}
			t.Logf("%d pieces in %v", total, time.Since(start))
			b.same(t, want)
		})
	}
}

// BenchmarkOneSeedOneNode64MiB times a 64 MiB image from one seeding peer
// to one node on loopback, no web seed.
//
//	go test -run '^$' -bench OneSeedOneNode -benchtime 3x ./fetch/swarm/
func BenchmarkOneSeedOneNode64MiB(b *testing.B) {
	for _, chunk := range []int64{64 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("chunk=%dKiB", chunk>>10), func(b *testing.B) {
			st, m, want := bigImage(b, 64<<20, chunk)
			srv := newServer(b, st)
			srv.seedOff.Store(true)
			newNode(b, "127.0.0.2", m, srv.URL, want, false)
			b.SetBytes(64 << 20)
			b.ResetTimer()
			for i := range b.N {
				n := newNode(b, fmt.Sprintf("127.0.1.%d", i+1), m, srv.URL, nil, false)
				if err := n.sess.Wait(b.Context(), 10*time.Second); err != nil {
					b.Fatalf("%v (%d of %d pieces came)", err, len(n.sess.Tor.Pieces)-n.sess.Missing(), len(n.sess.Tor.Pieces))
				}
				b.StopTimer()
				n.Close()
				b.StartTimer()
			}
		})
	}
}
