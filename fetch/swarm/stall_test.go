package swarm

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

// bigImage stores a one-partition image of size bytes of random chunks
// of chunk bytes, with the swarm pieces a build gives it by default.
func bigImage(t testing.TB, size, chunk int64) (*store.Dir, *image.Manifest, [][]byte) {
	t.Helper()
	return bigImagePieces(t, size, chunk, 0)
}

// bigImagePieces is bigImage with swarm pieces of piece bytes (as
// withPieces).
func bigImagePieces(t testing.TB, size, chunk, piece int64) (*store.Dir, *image.Manifest, [][]byte) {
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
	withPieces(t, m, [][]byte{root}, piece)
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	return st, m, [][]byte{root}
}

// One seeding peer, one fetching node, no web seed: the whole image
// comes peer to peer (the engine once stopped after 31 pieces).
func TestOneSeedOneNodeWholeImage(t *testing.T) {
	for _, tc := range []struct {
		name               string
		size, chunk, piece int64
	}{
		{"16MiB of 64KiB chunks", 16 << 20, 64 << 10, 0},
		{"32MiB of 1MiB chunks, 64KiB pieces", 32 << 20, 1 << 20, 0},
		{"32MiB of 1MiB chunks, pieces are chunks", 32 << 20, 1 << 20, -1},
		{"8MiB of 256KiB chunks, 16KiB pieces", 8 << 20, 256 << 10, 16 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, m, want := bigImagePieces(t, tc.size, tc.chunk, tc.piece)
			srv := newServer(t, st)
			srv.seedOff.Store(true)
			newNode(t, "127.0.0.2", m, srv.URL, want, false)
			start := time.Now()
			b := newNode(t, "127.0.0.3", m, srv.URL, nil, false)
			total := len(b.sess.Tor.Chunks)
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
					b.Fatalf("%v (%d of %d pieces came)", err, len(n.sess.Tor.Chunks)-n.sess.Missing(), len(n.sess.Tor.Chunks))
				}
				b.StopTimer()
				n.Close()
				b.StartTimer()
			}
		})
	}
}

// The web seed alone gives a node the chunks it lacks when they are
// scattered (every other chunk, as a sync to a version that changed every
// other chunk): 8 MiB of 64 KiB chunks.
func TestWebSeedScatteredPieces(t *testing.T) {
	st, m, want := bigImage(t, 16<<20, 64<<10)
	srv := newServer(t, st)
	n, err := NewNode(Options{Listen: "127.0.0.3:0"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	have := func(i int) bool { return i%2 == 0 }
	cs := int(m.ChunkSize)
	for i := 0; i*cs < len(want[0]); i += 2 {
		if _, err := f.WriteAt(want[0][i*cs:(i+1)*cs], int64(i*cs)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { n.Close() })
	start := time.Now()
	s, err := n.Join(m, srv.URL, []Place{{Content: m.Partitions[0].Content, Target: f, Have: have}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Missing(); got != 128 {
		t.Fatalf("%d pieces missing, want 128", got)
	}
	// Each request ends where the wanted data ends: none runs past a
	// 64 KiB slice, which proves the engine took webseedSlice (with its
	// 64 MiB default a request runs to the end of the file, and is
	// cancelled at the first chunk the node has). Checked from the first
	// piece on, so that a regression fails at once.
	smallRanges := func() int {
		t.Helper()
		lens := srv.rangeLens(t)
		for _, n := range lens {
			if n < 0 || n > image.MinChunkSize {
				t.Fatalf("a web seed request of %d bytes (want every one ranged, at most %d): %v", n, image.MinChunkSize, lens)
			}
		}
		return len(lens)
	}
	for s.Missing() == 128 && time.Since(start) < 10*time.Second {
		time.Sleep(time.Millisecond)
	}
	smallRanges()
	// Once one piece per request, one request at a time, seconds apart:
	// 4.6 min. Loopback does it in well under a second.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := s.Wait(ctx, 10*time.Second); err != nil {
		t.Fatalf("%v after %v, %d pieces missing", err, time.Since(start), s.Missing())
	}
	t.Logf("128 scattered pieces from the web seed in %v, %d requests", time.Since(start), smallRanges())
	nd := &node{Node: n, files: []*os.File{f}, sess: s}
	nd.same(t, want)
}
