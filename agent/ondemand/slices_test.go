package ondemand_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

const testPiece = 16 << 10

// sliceImage is an image in a store directory: a one-chunk partition
// "boot", then "root", raw: a chunk, another, a zero chunk, the first
// again, another, and a short last chunk of 10 KiB (one piece of data,
// padded). Root's chunks are not at their own index in the torrent, and
// one of them is there once for two places. With pieces, the image has
// the swarm-pieces extension for 16 KiB pieces.
type sliceImage struct {
	raw []byte
	m   *image.Manifest
	dir *store.Dir
}

func newSliceImage(t *testing.T, pieces bool) sliceImage {
	t.Helper()
	d, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	boot := make([]byte, cs)
	rand.Read(boot)
	raw := make([]byte, 5*cs+10<<10)
	rand.Read(raw)
	clear(raw[2*cs : 3*cs])
	copy(raw[3*cs:4*cs], raw[:cs])
	content := func(raw []byte) *image.Content {
		c := &image.Content{Size: int64(len(raw)), SHA256: image.HashBytes(raw)}
		for off := 0; off < len(raw); off += cs {
			b := raw[off:min(off+cs, len(raw))]
			if image.IsZero(b) {
				c.Chunks = append(c.Chunks, image.ZeroChunk)
				continue
			}
			sum := image.HashBytes(b)
			if _, err := d.PutChunk(sum, b); err != nil {
				t.Fatal(err)
			}
			c.Chunks = append(c.Chunks, sum)
		}
		return c
	}
	m := &image.Manifest{Format: image.FormatVersion, Name: "sl", Version: "1", Created: time.Unix(1700000000, 0).UTC(), ChunkSize: cs,
		Partitions: []image.Partition{
			{Name: "boot", Type: layout.TypeLinuxGeneric, Content: content(boot)},
			{Name: "root", Type: layout.TypeRootX86_64, Content: content(raw)},
		}}
	if pieces {
		data := [][]byte{boot, raw}
		h, err := image.PieceHashes(m, testPiece, func(p, c int, buf []byte) error {
			copy(buf, data[p][int64(c)*cs:])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SetSwarmPieces(&image.SwarmPieces{PieceLength: testPiece, Hashes: h}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	return sliceImage{raw: raw, m: m, dir: d}
}

// seedServer serves im's store and, unless seed is nil, seed (wrapping
// the real web seed) at /swarm/data/; it counts requests of each kind.
type seedServer struct {
	url            string
	chunks, ranges atomic.Int64
}

func newSeedServer(t *testing.T, im sliceImage, seed func(real http.Handler) http.Handler) *seedServer {
	t.Helper()
	s := &seedServer{}
	ws := &swarm.WebSeed{Src: im.dir}
	t.Cleanup(ws.Close)
	files := http.FileServer(http.Dir(im.dir.Root))
	var data http.Handler = http.NotFoundHandler()
	if seed != nil {
		data = seed(http.StripPrefix("/swarm/data/", ws))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/swarm/data/"):
			s.ranges.Add(1)
			data.ServeHTTP(w, r)
		case strings.HasPrefix(r.URL.Path, "/chunks/"):
			s.chunks.Add(1)
			files.ServeHTTP(w, r)
		default:
			files.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL + "/"
	return s
}

func plainSeed(h http.Handler) http.Handler { return h }

// tamperedSeed sends the web seed's bytes with one of them changed.
func tamperedSeed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		b := rec.Body.Bytes()
		if len(b) > 100 {
			b[100] ^= 0xff
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(b)
	})
}

// noRangeSeed ignores Range: 200 and the whole file.
func noRangeSeed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Range")
		h.ServeHTTP(w, r)
	})
}

// shortSeed answers the range it was asked with half its bytes.
func shortSeed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
	})
}

// wrongRangeSeed answers every request with the file's first bytes.
func wrongRangeSeed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a, b int64
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b); err == nil {
			r.Header.Set("Range", fmt.Sprintf("bytes=0-%d", b-a))
		}
		h.ServeHTTP(w, r)
	})
}

type sliceReader struct {
	*ondemand.Reader
	mu     sync.Mutex
	logs   []string
	errors []string // the fetcher's OnError, with the source
}

func (s *sliceReader) said() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(append(append([]string{}, s.logs...), s.errors...), "\n")
}

func newSliceReader(t *testing.T, im sliceImage, window int64, urls ...string) *sliceReader {
	t.Helper()
	var srcs []store.Source
	for _, u := range urls {
		srcs = append(srcs, httpSrc(t, u))
	}
	return sliceReaderOver(t, im, window, fast(), nil, srcs...)
}

// sliceReaderOver reads im's second partition in windows of window bytes
// from srcs with fo, its logs and the fetcher's errors kept for said;
// tune, when set, changes the reader's options last.
func sliceReaderOver(t *testing.T, im sliceImage, window int64, fo fetch.Options, tune func(*ondemand.Options), srcs ...store.Source) *sliceReader {
	t.Helper()
	sl, err := ondemand.SlicesOf(im.m, im.m.Partitions[1].Content, window)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := image.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	s := &sliceReader{}
	fo.OnError = func(i int, what string, err error) {
		s.mu.Lock()
		s.errors = append(s.errors, fmt.Sprintf("%s from %v: %v", what, srcs[i], err))
		s.mu.Unlock()
	}
	o := ondemand.Options{
		Content: im.m.Partitions[1].Content, ChunkSize: cs, Decoder: dec, CacheBytes: 1 << 30,
		Fetcher: fetch.New(srcs, fo), Slices: sl,
		RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond,
		Logf: func(f string, a ...any) {
			s.mu.Lock()
			s.logs = append(s.logs, fmt.Sprintf(f, a...))
			s.mu.Unlock()
		},
	}
	if tune != nil {
		tune(&o)
	}
	if s.Reader, err = ondemand.New(o); err != nil {
		t.Fatal(err)
	}
	return s
}

func httpSrc(t *testing.T, url string) store.Source {
	t.Helper()
	src, err := store.OpenHTTP(url)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func readCheck(t *testing.T, r *sliceReader, raw []byte, off int64, n int) {
	t.Helper()
	got := make([]byte, n)
	if err := r.ReadAt(t.Context(), got, off); err != nil {
		t.Fatalf("read of %d at %d: %v", n, off, err)
	}
	if !bytes.Equal(got, raw[off:off+int64(n)]) {
		t.Fatalf("read of %d at %d: wrong bytes", n, off)
	}
}

func TestSlicesReadOnlyTheSignedPiecesAReadNeeds(t *testing.T) {
	im := newSliceImage(t, true)
	for _, tc := range []struct {
		name      string
		window    int64
		off       int64
		n         int
		reqs      int   // range requests
		pieceByte int64 // bytes of pieces fetched
	}{
		{"inside one piece: its window", 32 << 10, 100, 1000, 1, 32 << 10},
		{"a window of one piece", 16 << 10, 100, 1000, 1, 16 << 10},
		{"across two windows", 32 << 10, 30 << 10, 4 << 10, 2, 64 << 10},
		{"across a chunk boundary", 32 << 10, cs - 10, 20, 2, 64 << 10},
		{"across the zero chunk", 32 << 10, 2*cs - 512, cs + 1024, 2, 64 << 10},
		{"the chunk that is there twice", 32 << 10, 3*cs + 5, 10, 1, 32 << 10},
		{"the short last chunk: its one piece, not the padding", 32 << 10, 5 * cs, 10 << 10, 1, 16 << 10},
		{"a window of the whole chunk", cs, 4*cs + 7, 3, 1, cs},
		// Chunk 3 is chunk 0 again: its windows are fetched once, not twice.
		{"all of it, the chunk there twice fetched once", 32 << 10, 0, 5*cs + 10<<10, 7, 3*cs + 16<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newSeedServer(t, im, plainSeed)
			r := newSliceReader(t, im, tc.window, srv.url)
			readCheck(t, r, im.raw, tc.off, tc.n)
			// Again: from the cache.
			readCheck(t, r, im.raw, tc.off, tc.n)
			st := r.Stats()
			if st.PieceRequests != tc.reqs || st.PieceBytes != tc.pieceByte || st.Pieces != int(tc.pieceByte/testPiece) || st.FetchedBytes != tc.pieceByte {
				t.Fatalf("%d range requests for %d bytes in %d pieces (%d fetched), want %d for %d", st.PieceRequests, st.PieceBytes, st.Pieces, st.FetchedBytes, tc.reqs, tc.pieceByte)
			}
			if n := srv.ranges.Load(); n != int64(tc.reqs) {
				t.Fatalf("the server saw %d range requests, want %d", n, tc.reqs)
			}
			if st.FetchedChunks != 0 || srv.chunks.Load() != 0 || st.PiecesRefused != 0 || st.PieceFallbacks != 0 {
				t.Fatalf("whole chunks: %+v, %d chunk requests", st, srv.chunks.Load())
			}
		})
	}
}

func TestSlicesRefuseWhatDoesNotCheck(t *testing.T) {
	im := newSliceImage(t, true)
	for _, tc := range []struct {
		name        string
		first       func(http.Handler) http.Handler
		second      bool // a good second source
		refused     bool // pieces refused for their hash
		say         string
		wantChunks  bool // read from whole chunks
		noSeedAgain bool // the first source is not asked for pieces again
	}{
		{"tampered, a good seed next", tamperedSeed, true, true, "hashes to", false, false},
		{"tampered alone: whole chunks", tamperedSeed, false, true, "hashes to", true, false},
		{"no web seed (404): whole chunks", nil, false, false, "no source serves the swarm web seed", true, true},
		{"no web seed (404), a seed next", nil, true, false, "/swarm/data/sl/1 (bytes 65536-98303): not found", false, true},
		{"Range ignored (200, the whole file)", noRangeSeed, false, false, "whole file", true, false},
		{"a short body", shortSeed, false, false, "unexpected EOF", true, false},
		{"another range", wrongRangeSeed, false, false, "Content-Range", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newSeedServer(t, im, tc.first)
			urls := []string{a.url}
			if tc.second {
				urls = append(urls, newSeedServer(t, im, plainSeed).url)
			}
			r := newSliceReader(t, im, 32<<10, urls...)
			readCheck(t, r, im.raw, 100, 1000)
			seen := a.ranges.Load()
			readCheck(t, r, im.raw, 4*cs+100, 1000)
			st := r.Stats()
			if tc.refused != (st.PiecesRefused > 0) {
				t.Fatalf("%d pieces refused", st.PiecesRefused)
			}
			if tc.wantChunks != (st.FetchedChunks == 2) || tc.wantChunks == (st.Pieces == 4) {
				t.Fatalf("%d whole chunks, %d pieces: want whole chunks %v", st.FetchedChunks, st.Pieces, tc.wantChunks)
			}
			if tc.noSeedAgain != (a.ranges.Load() == seen) {
				t.Fatalf("the first source had %d range requests, then %d: want none again %v", seen, a.ranges.Load(), tc.noSeedAgain)
			}
			said := r.said()
			if !strings.Contains(said, tc.say) {
				t.Fatalf("said %q, want %q", said, tc.say)
			}
			if tc.refused && (!strings.Contains(said, "piece 4 ") || !strings.Contains(said, "of chunk 0") || !strings.Contains(said, a.url)) {
				t.Fatalf("a refused piece should be said with its piece, its chunk and its source: %q", said)
			}
			if n := strings.Count(said, "reading whole chunks"); n > 1 {
				t.Fatalf("said %d times that no source serves the web seed: %q", n, said)
			}
		})
	}
}

func TestSlicesOfAnImage(t *testing.T) {
	with, without := newSliceImage(t, true), newSliceImage(t, false)
	if sl, err := ondemand.SlicesOf(without.m, without.m.Partitions[1].Content, 128<<10); sl != nil || err != nil {
		t.Fatalf("without the extension: %+v, %v; want no slices, no error", sl, err)
	}
	if sl, err := ondemand.SlicesOf(with.m, with.m.Partitions[1].Content, 0); sl != nil || err != nil {
		t.Fatalf("window 0: %+v, %v; want no slices", sl, err)
	}
	for _, tc := range []struct{ window, want int64 }{{1, 16 << 10}, {20 << 10, 32 << 10}, {32 << 10, 32 << 10}, {1 << 20, cs}} {
		sl, err := ondemand.SlicesOf(with.m, with.m.Partitions[1].Content, tc.window)
		if err != nil || sl.Window != tc.want || sl.PieceLength != testPiece {
			t.Fatalf("window %d: %+v, %v; want %d", tc.window, sl, err, tc.want)
		}
		// boot is the torrent's chunk 0; root's fourth chunk is its first.
		if want := []int{1, 2, -1, 1, 3, 4}; fmt.Sprint(sl.Torrent) != fmt.Sprint(want) {
			t.Fatalf("torrent places %v, want %v", sl.Torrent, want)
		}
	}
	bad := *with.m
	bad.Extensions = nil
	bad.SetExtension(image.SwarmPiecesExtension, []byte(`{"piece_length":16384,"hashes":"AAAA"}`))
	if _, err := ondemand.SlicesOf(&bad, bad.Partitions[1].Content, 128<<10); !errors.Is(err, image.ErrFormat) {
		t.Fatalf("a malformed extension: %v, want image.ErrFormat", err)
	}
}

func TestAReaderWithoutSlicesReadsWholeChunks(t *testing.T) {
	im := newSliceImage(t, false)
	srv := newSeedServer(t, im, plainSeed)
	r := newSliceReader(t, im, 32<<10, srv.url)
	readCheck(t, r, im.raw, 0, len(im.raw))
	if st := r.Stats(); st.FetchedChunks != 5 || st.Pieces != 0 || srv.ranges.Load() != 0 {
		t.Fatalf("%d chunks, %d pieces, %d range requests; want 5 whole chunks", st.FetchedChunks, st.Pieces, srv.ranges.Load())
	}
}
