package copier

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/store"
)

// recTarget is a partition in memory that remembers which ranges were
// written.
type recTarget struct {
	mu      sync.Mutex // the copier writes from several workers
	b       []byte
	written map[int64]bool
	zeroed  [][2]int64 // ZeroRange calls: offset, length
}

func (m *recTarget) ReadAt(p []byte, off int64) (int, error) { return copy(p, m.b[off:]), nil }
func (m *recTarget) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	m.written[off] = true
	m.mu.Unlock()
	return copy(m.b[off:], p), nil
}
func (m *recTarget) ZeroRange(off, n int64) error {
	m.mu.Lock()
	m.zeroed = append(m.zeroed, [2]int64{off, n})
	m.mu.Unlock()
	clear(m.b[off : off+n])
	return nil
}

const cs = 64 << 10

func setup(t *testing.T) (*Copier, *store.Dir, *image.Content, []byte) {
	t.Helper()
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 10*cs+4096)
	rand.Read(data[:3*cs])
	rand.Read(data[6*cs:])
	c, _, err := image.StoreContent(context.Background(), st, bytes.NewReader(data), int64(len(data)), cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := image.NewDecoder()
	t.Cleanup(dec.Close)
	return &Copier{Sources: []store.Source{st}, Dec: dec, ChunkSize: cs, Workers: 3}, st, c, data
}

func TestWriteZeroesReusedTargetAndVerifies(t *testing.T) {
	cp, _, c, data := setup(t)
	dst := &recTarget{b: bytes.Repeat([]byte{0xEE}, len(data)), written: map[int64]bool{}}
	if err := cp.Write(context.Background(), c, dst, Hooks{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.b, data) {
		t.Fatal("target differs from the content: zero chunks were not zeroed on a reused target")
	}
	bad, err := cp.Verify(context.Background(), c, dst, nil)
	if err != nil || len(bad) != 0 {
		t.Fatalf("verify: %v %v", bad, err)
	}
	dst.b[4*cs+7] = 1 // inside an all-zero chunk
	dst.b[len(data)-1] ^= 1
	bad, _ = cp.Verify(context.Background(), c, dst, nil)
	if len(bad) != 2 || bad[0] != 4 || bad[1] != 10 {
		t.Fatalf("verify found %v, want [4 10]", bad)
	}
}

// Consecutive zero chunks are zeroed with one call (one BLKZEROOUT on a
// block device), a run is cut where a chunk is skipped, so a skipped chunk
// is never touched, and every chunk of a run is reported done.
func TestWriteZeroesARunOfZeroChunksAtOnce(t *testing.T) {
	for _, tc := range []struct {
		skip int // a chunk already done, or -1
		want [][2]int64
	}{
		{-1, [][2]int64{{3 * cs, 3 * cs}}},
		{4, [][2]int64{{3 * cs, cs}, {5 * cs, cs}}},
		{3, [][2]int64{{4 * cs, 2 * cs}}},
	} {
		cp, _, c, data := setup(t)
		dst := &recTarget{b: bytes.Repeat([]byte{0xEE}, len(data)), written: map[int64]bool{}}
		var mu sync.Mutex
		done := map[int]bool{}
		err := cp.Write(context.Background(), c, dst, Hooks{
			Skip: func(i int) bool { return i == tc.skip },
			Done: func(i int) { mu.Lock(); done[i] = true; mu.Unlock() },
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(dst.zeroed, func(a, b [2]int64) int { return int(a[0] - b[0]) })
		if !slices.Equal(dst.zeroed, tc.want) {
			t.Errorf("skip %d: zeroed %v, want %v", tc.skip, dst.zeroed, tc.want)
		}
		for i := range c.Chunks {
			if done[i] != (i != tc.skip) {
				t.Errorf("skip %d: chunk %d reported done: %v", tc.skip, i, done[i])
			}
			at := int64(i) * cs
			got, want := dst.b[at:at+c.ChunkLen(i, cs)], data[at:at+c.ChunkLen(i, cs)]
			if i == tc.skip {
				want = bytes.Repeat([]byte{0xEE}, len(got))
			}
			if !bytes.Equal(got, want) {
				t.Errorf("skip %d: chunk %d holds the wrong bytes", tc.skip, i)
			}
		}
	}
}

func TestWriteSkipsDoneChunks(t *testing.T) {
	cp, _, c, data := setup(t)
	dst := &recTarget{b: make([]byte, len(data)), written: map[int64]bool{}}
	done := NewBitmap(len(c.Chunks))
	done.Set(0)
	done.Set(7)
	var mu sync.Mutex
	var marked []int
	// Workers call Done concurrently.
	err := cp.Write(context.Background(), c, dst, Hooks{Skip: done.Has, Done: func(i int) { mu.Lock(); marked = append(marked, i); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if dst.written[0] || dst.written[7*cs] {
		t.Fatal("a chunk marked done was written again")
	}
	if len(marked) != len(c.Chunks)-2 {
		t.Fatalf("%d chunks reported done, want %d", len(marked), len(c.Chunks)-2)
	}
}

func TestBadChunkIsNeverWritten(t *testing.T) {
	cp, st, c, data := setup(t)
	// Replace chunk 1's stored bytes with a valid zstd frame of other data.
	other := make([]byte, cs)
	rand.Read(other)
	otherSum := image.HashBytes(other)
	st.PutChunk(otherSum, other)
	forged, _ := st.Chunk(context.Background(), otherSum)
	cp.Sources = []store.Source{swapSource{Source: st, sum: c.Chunks[1], stored: forged}}
	cp.Workers = 1
	// Also when the read-back will compare with what was written
	// (Written): the SHA-256 check before writing is what proves it.
	for _, h := range []Hooks{{}, {Written: NewWritten()}} {
		dst := &recTarget{b: make([]byte, len(data)), written: map[int64]bool{}}
		err := cp.Write(context.Background(), c, dst, h)
		if !errors.Is(err, image.ErrChecksum) {
			t.Fatalf("got %v, want ErrChecksum", err)
		}
		if dst.written[cs] {
			t.Fatal("the forged chunk reached the target")
		}
		if recorded, _ := h.Written.matches(1, other); recorded {
			t.Fatal("the forged chunk was recorded as written")
		}
	}
}

type swapSource struct {
	store.Source
	sum    string
	stored []byte
}

func (s swapSource) Chunk(ctx context.Context, sum string) ([]byte, error) {
	if sum == s.sum {
		return s.stored, nil
	}
	return s.Source.Chunk(ctx, sum)
}

func TestBitmapJSONRoundTrip(t *testing.T) {
	b := NewBitmap(13)
	for _, i := range []int{0, 5, 12} {
		b.Set(i)
	}
	raw, err := b.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var c Bitmap
	if err := c.UnmarshalJSON(raw); err != nil {
		t.Fatal(err)
	}
	if c.Count() != 3 || !c.Has(12) || c.Has(11) || c.Len() != 13 {
		t.Fatalf("round trip lost bits: %s", raw)
	}
	if err := c.UnmarshalJSON([]byte(`{"n":100,"bits":"AA=="}`)); err == nil {
		t.Fatal("a bitmap of the wrong length was accepted")
	}
}

func TestLyingSourceIsPassedOverForTheNext(t *testing.T) {
	cp, st, c, data := setup(t)
	other := make([]byte, cs)
	rand.Read(other)
	otherSum := image.HashBytes(other)
	st.PutChunk(otherSum, other)
	forged, _ := st.Chunk(context.Background(), otherSum)
	liar := swapSource{Source: st, sum: c.Chunks[1], stored: forged}
	var mu sync.Mutex
	var complaints []string
	cp.Fetch = fetch.New([]store.Source{liar, st}, fetch.Options{OnError: func(src int, what string, err error) {
		if src != 0 || !errors.Is(err, image.ErrChecksum) {
			t.Errorf("complaint about source %d: %v", src, err)
		}
		mu.Lock()
		complaints = append(complaints, what)
		mu.Unlock()
	}})
	dst := &recTarget{b: make([]byte, len(data)), written: map[int64]bool{}}
	if err := cp.Write(context.Background(), c, dst, Hooks{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.b, data) {
		t.Fatal("the lying source changed the result")
	}
	if len(complaints) != 1 || complaints[0] != "chunk "+c.Chunks[1] {
		t.Fatalf("complaints %v", complaints)
	}
	from := cp.BytesFrom()
	if from[1] != cs {
		t.Fatalf("bytes from the honest source for the forged chunk: %v", from)
	}
}

// On a partition of a real image file the copier writes and reads back
// with O_DIRECT; the result must be the same as through the page cache,
// and a read-back must see a change made through the page cache.
func TestDirectIOOnImageFile(t *testing.T) {
	for _, tc := range []struct {
		tail  int  // bytes of the last chunk: 100 is one O_DIRECT cannot take
		fresh bool // a new image file, all holes, or one full of old bytes
	}{{4096, false}, {100, false}, {4096, true}} {
		tail := tc.tail
		cp, _, _, _ := setup(t)
		st, _ := store.CreateDir(t.TempDir())
		data := make([]byte, 10*cs+tail)
		rand.Read(data[:3*cs])
		rand.Read(data[6*cs:])
		c, _, err := image.StoreContent(context.Background(), st, bytes.NewReader(data), int64(len(data)), cs, nil)
		if err != nil {
			t.Fatal(err)
		}
		cp.Sources = []store.Source{st}
		path := filepath.Join(t.TempDir(), "disk.img")
		const at = 1 << 20
		dev, err := disk.OpenDisk(path, disk.OpenOptions{Write: true, Create: true, Size: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		if !tc.fresh {
			// Old bytes everywhere, so zero chunks must really be zeroed.
			if _, err := dev.WriteAt(bytes.Repeat([]byte{0xEE}, 3<<20), 0); err != nil {
				t.Fatal(err)
			}
		}
		sec := fileSection{disk.Section{D: dev, Off: at, Len: 2 << 20}, dev}
		if d := openDirect(sec, true); d == nil {
			t.Log("no O_DIRECT here: testing the ordinary path only")
		} else {
			d.close()
		}
		if err := cp.Write(context.Background(), c, sec, Hooks{}); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data))
		if _, err := dev.ReadAt(got, at); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("tail %d: the partition differs from the content", tail)
		}
		if bad, err := cp.Verify(context.Background(), c, sec, nil); err != nil || len(bad) != 0 {
			t.Fatalf("tail %d: verify: %v %v", tail, bad, err)
		}
		if tc.fresh && !sec.Hole(4*cs, cs) {
			t.Error("an all-zero chunk of a new image file was allocated: holes should stay holes")
		}
		if _, err := dev.WriteAt([]byte{^data[2*cs+5]}, at+2*cs+5); err != nil {
			t.Fatal(err)
		}
		if bad, _ := cp.Verify(context.Background(), c, sec, nil); len(bad) != 1 || bad[0] != 2 {
			t.Fatalf("tail %d: verify found %v after a change, want [2]", tail, bad)
		}
	}
}

// fileSection is a partition of an image file, as deploy hands it over.
type fileSection struct {
	disk.Section
	dev *disk.Disk
}

func (s fileSection) ZeroRange(off, n int64) error { return s.dev.ZeroRange(s.Off+off, n) }

// A manifest whose chunks each match but whose content sha256 does not is
// inconsistent: VerifyFull refuses it, on a plain target and on one with
// holes. Verify checks chunks only: every byte is still proven by them.
func TestVerifyFullChecksTheWholeContentHash(t *testing.T) {
	cp, _, c, data := setup(t)
	dst := &recTarget{b: append([]byte{}, data...), written: map[int64]bool{}}
	if bad, err := cp.VerifyFull(context.Background(), c, dst, nil); err != nil || len(bad) != 0 {
		t.Fatalf("a consistent manifest: %v %v", bad, err)
	}
	lying := *c
	lying.SHA256 = image.HashBytes([]byte("not this content"))
	bad, err := cp.VerifyFull(context.Background(), &lying, dst, nil)
	if !errors.Is(err, image.ErrInconsistent) || !errors.Is(err, image.ErrChecksum) || len(bad) != 0 || !strings.Contains(err.Error(), "inconsistent") {
		t.Fatalf("a manifest with a wrong content sha256: bad %v, err %v; want ErrInconsistent naming the inconsistency", bad, err)
	}
	if bad, err := cp.Verify(context.Background(), &lying, dst, nil); err != nil || len(bad) != 0 {
		t.Fatalf("Verify (chunks only) of the same disk: bad %v, err %v; want every chunk matching", bad, err)
	}
	// Chunks that differ are reported as such, not as an inconsistent manifest.
	dst.b[0] ^= 1
	for _, v := range []func(context.Context, *image.Content, io.ReaderAt, func(int64)) ([]int, error){cp.Verify, cp.VerifyFull} {
		bad, err = v(context.Background(), c, dst, nil)
		if err != nil || len(bad) != 1 || bad[0] != 0 {
			t.Fatalf("a drifted chunk: bad %v, err %v", bad, err)
		}
	}
	// Many workers, few tokens: the ordered hash neither deadlocks nor
	// loses a chunk.
	dst.b[0] ^= 1
	cp.Workers = 1
	if bad, err := cp.VerifyFull(context.Background(), c, dst, nil); err != nil || len(bad) != 0 {
		t.Fatalf("one worker: %v %v", bad, err)
	}
}

// A zero chunk is proven by reading as zeros, without hashing: one that
// holds a single stray byte is reported, by Verify and VerifyFull alike.
func TestVerifyFindsAByteInAZeroChunk(t *testing.T) {
	cp, _, c, data := setup(t)
	z := -1
	for i, s := range c.Chunks {
		if s == image.ZeroChunk {
			z = i
			break
		}
	}
	if z < 0 {
		t.Fatal("the test content has no zero chunk")
	}
	dst := &recTarget{b: append([]byte{}, data...), written: map[int64]bool{}}
	dst.b[int64(z)*cp.ChunkSize+cp.ChunkSize-1] = 1
	for _, v := range []func(context.Context, *image.Content, io.ReaderAt, func(int64)) ([]int, error){cp.Verify, cp.VerifyFull} {
		if bad, err := v(context.Background(), c, dst, nil); err != nil || len(bad) != 1 || bad[0] != z {
			t.Fatalf("a stray byte in zero chunk %d: bad %v, err %v", z, bad, err)
		}
	}
}

// The read-back after a Write compares each chunk it wrote with what it
// wrote (Written), and checks the others (skipped: written by an earlier
// run) against their SHA-256: a changed byte is found either way.
func TestVerifyWrittenFindsChangedChunks(t *testing.T) {
	cp, _, c, data := setup(t)
	dst := &recTarget{b: make([]byte, len(data)), written: map[int64]bool{}}
	copy(dst.b[:cs], data[:cs]) // chunk 0: "an earlier run" wrote it
	w := NewWritten()
	if err := cp.Write(context.Background(), c, dst, Hooks{Skip: func(i int) bool { return i == 0 }, Written: w}); err != nil {
		t.Fatal(err)
	}
	if recorded, _ := w.matches(0, data[:cs]); recorded {
		t.Fatal("a skipped chunk was recorded as written")
	}
	if recorded, ok := w.matches(2, data[2*cs:3*cs]); !recorded || !ok {
		t.Fatalf("chunk 2: recorded %v, matches %v; want both", recorded, ok)
	}
	if bad, err := cp.VerifyWritten(context.Background(), c, dst, w, nil); err != nil || len(bad) != 0 {
		t.Fatalf("an intact target: %v %v", bad, err)
	}
	for _, at := range []int64{5, 2*cs + 9, 10*cs + 100} { // skipped, written, written (the short last chunk)
		dst.b[at] ^= 0x40
		bad, err := cp.VerifyWritten(context.Background(), c, dst, w, nil)
		if want := int(at / cs); err != nil || len(bad) != 1 || bad[0] != want {
			t.Fatalf("byte %d changed: bad %v, err %v; want [%d]", at, bad, err, want)
		}
		dst.b[at] ^= 0x40
	}
}
