// Command chunksize measures, for several chunk sizes, how many chunks of a
// new filesystem image a node that holds the old image must fetch, and how
// many bytes that is, raw and as the store keeps them (zstd).
//
//	go run ./bench/chunksize [-sizes 64K,256K,1M,4M,16M] [-label TEXT] OLD.img NEW.img
//	go run ./bench/chunksize -overhead [-sizes ...]
//
// It cuts both images the way imprint does (fixed-size, aligned chunks,
// all-zero chunks not stored, chunks named by SHA-256) and compresses with
// the store's encoder settings (klauspost zstd, SpeedDefault). A chunk is
// "fetched" when its SHA-256 is in no chunk of the old image (content
// addressing: a node reuses any chunk it already has, wherever it sits) and
// counted once however often it occurs. "moved" counts the positions whose
// chunk differs from the old image's chunk at the same offset.
//
// -overhead prints what the chunk size costs regardless of content: the
// manifest size for 1 GiB and 30 GiB partitions, and one HTTP request per
// chunk, timed against a net/http server on 127.0.0.1 (a floor: no network,
// no TLS, no disk).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
)

// Manifest bytes per chunk entry as image.Manifest.Marshal writes them
// (MarshalIndent, chunk lists at depth 4): 8 spaces, a quoted 64-hex name,
// a comma, a newline; an all-zero chunk is the word "zero" instead.
const (
	manifestBytesPerChunk = 8 + 66 + 2
	manifestBytesPerZero  = 8 + 6 + 2
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chunksize:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fl := flag.NewFlagSet("chunksize", flag.ContinueOnError)
	sizesFlag := fl.String("sizes", "64K,256K,1M,4M,16M", "chunk sizes to measure, comma-separated (K, M suffixes)")
	label := fl.String("label", "", "title printed above the table")
	overhead := fl.Bool("overhead", false, "print manifest size and per-request cost per chunk size instead of comparing images")
	if err := fl.Parse(args); err != nil {
		return err
	}
	sizes, err := parseSizes(*sizesFlag)
	if err != nil {
		return fmt.Errorf("-sizes: %w", err)
	}
	if *overhead {
		if fl.NArg() != 0 {
			return fmt.Errorf("-overhead takes no image arguments, got %d", fl.NArg())
		}
		return printOverhead(ctx, out, sizes)
	}
	if fl.NArg() != 2 {
		return fmt.Errorf("want two arguments, OLD.img NEW.img; got %d", fl.NArg())
	}
	oldPath, newPath := fl.Arg(0), fl.Arg(1)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	defer enc.Close()
	var rows []result
	for _, cs := range sizes {
		r, err := compare(ctx, oldPath, newPath, cs, enc)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	if *label != "" {
		fmt.Fprintf(out, "\n%s\n\n", *label)
	}
	printResults(out, rows)
	return nil
}

func parseSizes(s string) ([]int64, error) {
	var sizes []int64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := int64(1)
		switch {
		case strings.HasSuffix(f, "K"):
			mult, f = 1<<10, strings.TrimSuffix(f, "K")
		case strings.HasSuffix(f, "M"):
			mult, f = 1<<20, strings.TrimSuffix(f, "M")
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a size like 64K or 4M", f)
		}
		if n*mult%4096 != 0 {
			return nil, fmt.Errorf("%s is not a multiple of 4 KiB", f)
		}
		sizes = append(sizes, n*mult)
	}
	return sizes, nil
}

// result is one chunk size's comparison of two images.
type result struct {
	chunkSize           int64
	newSize             int64
	chunks, zero        int   // of the new image
	moved               int   // positions whose chunk differs from the old image's
	fetched             int   // distinct non-zero chunks of the new image not in the old one
	fetchRaw, fetchZstd int64 // bytes of those chunks
	fullZstd            int64 // every distinct non-zero chunk of the new image, compressed (a fresh deploy)
	distinct            int   // distinct non-zero chunks of the new image
}

type chunkInfo struct {
	sum  [32]byte
	zero bool
	n    int64
}

// hashChunks cuts a file into chunkSize pieces and hashes them on all cores.
// keep, if set, is called (concurrently) with each non-zero chunk's bytes and
// may decide to compress it.
func hashChunks(ctx context.Context, path string, chunkSize int64, keep func(i int, sum [32]byte, b []byte) error) ([]chunkInfo, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s is not a regular file", path)
	}
	size := st.Size()
	n := int((size + chunkSize - 1) / chunkSize)
	infos := make([]chunkInfo, n)
	type job struct {
		i int
		b []byte
	}
	jobs := make(chan job, runtime.NumCPU())
	free := make(chan []byte, runtime.NumCPU()+1)
	for range cap(free) {
		free <- make([]byte, chunkSize)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for i := range n {
			l := min(chunkSize, size-int64(i)*chunkSize)
			var b []byte
			select {
			case b = <-free:
			case <-gctx.Done():
				return gctx.Err()
			}
			if _, err := f.ReadAt(b[:l], int64(i)*chunkSize); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("%s: read at %d: %w", path, int64(i)*chunkSize, err)
			}
			jobs <- job{i, b[:l]}
		}
		return nil
	})
	for range runtime.NumCPU() {
		g.Go(func() error {
			for j := range jobs {
				ci := chunkInfo{n: int64(len(j.b)), zero: isZero(j.b)}
				if !ci.zero {
					ci.sum = sha256.Sum256(j.b)
					if keep != nil {
						if err := keep(j.i, ci.sum, j.b); err != nil {
							return err
						}
					}
				}
				infos[j.i] = ci
				free <- j.b[:cap(j.b)]
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	return infos, size, nil
}

var zeroBlock [64 << 10]byte

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

func compare(ctx context.Context, oldPath, newPath string, chunkSize int64, enc *zstd.Encoder) (result, error) {
	old, _, err := hashChunks(ctx, oldPath, chunkSize, nil)
	if err != nil {
		return result{}, err
	}
	have := make(map[[32]byte]bool, len(old))
	for _, c := range old {
		if !c.zero {
			have[c.sum] = true
		}
	}
	// Every distinct non-zero chunk of the new image is compressed once: its
	// stored size counts toward a fresh deploy, and toward the delta when the
	// old image lacks it.
	var mu sync.Mutex
	compressed := map[[32]byte]int64{}
	keep := func(_ int, sum [32]byte, b []byte) error {
		mu.Lock()
		_, done := compressed[sum]
		if !done {
			compressed[sum] = -1 // claimed
		}
		mu.Unlock()
		if done {
			return nil
		}
		n := int64(len(enc.EncodeAll(b, make([]byte, 0, len(b)/2))))
		mu.Lock()
		compressed[sum] = n
		mu.Unlock()
		return nil
	}
	cur, size, err := hashChunks(ctx, newPath, chunkSize, keep)
	if err != nil {
		return result{}, err
	}
	r := result{chunkSize: chunkSize, newSize: size, chunks: len(cur)}
	counted := map[[32]byte]bool{}
	for i, c := range cur {
		if i >= len(old) || old[i].zero != c.zero || old[i].sum != c.sum {
			r.moved++
		}
		if c.zero {
			r.zero++
			continue
		}
		if counted[c.sum] {
			continue
		}
		counted[c.sum] = true
		r.distinct++
		r.fullZstd += compressed[c.sum]
		if !have[c.sum] {
			r.fetched++
			r.fetchRaw += c.n
			r.fetchZstd += compressed[c.sum]
		}
	}
	return r, nil
}

func printResults(out io.Writer, rows []result) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "chunk\tchunks\tzero\tmoved\tfetched\t% of stored\tfetch raw\tfetch zstd\tfull deploy zstd\tmanifest\t")
	for _, r := range rows {
		pct := 0.0
		if r.distinct > 0 {
			pct = 100 * float64(r.fetched) / float64(r.distinct)
		}
		man := int64(r.chunks-r.zero)*manifestBytesPerChunk + int64(r.zero)*manifestBytesPerZero
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.2f%%\t%s\t%s\t%s\t%s\t\n", human(r.chunkSize), r.chunks, r.zero, r.moved, r.fetched, pct,
			human(r.fetchRaw), human(r.fetchZstd), human(r.fullZstd), human(man))
	}
	tw.Flush()
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// printOverhead prints, per chunk size, the manifest size and request count
// for 1 GiB and 30 GiB, and the time one request costs on loopback with
// keep-alive, sequential and 8 in flight (imprint's copier runs several
// workers), for a body of the chunk's size.
func printOverhead(ctx context.Context, out io.Writer, sizes []int64) error {
	const gib = int64(1) << 30
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "chunk\trequests 1 GiB\tmanifest 1 GiB\trequests 30 GiB\tmanifest 30 GiB\twire header bytes/req\tµs/req (1 conn)\tµs/req (8 conns)\tfixed cost 30 GiB (8 conns)\t")
	// The fixed per-request cost is what a 4-byte body costs; the rest of a
	// request's time is moving its bytes.
	_, _, par0, err := timeRequests(ctx, 4)
	if err != nil {
		return err
	}
	for _, cs := range sizes {
		n1, n30 := gib/cs, 30*gib/cs
		hdr, seq, par, err := timeRequests(ctx, cs)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%d\t%.0f\t%.0f\t%.2f s\t\n", human(cs), n1, human(n1*manifestBytesPerChunk), n30, human(n30*manifestBytesPerChunk),
			hdr, seq.Seconds()*1e6, par.Seconds()*1e6, (time.Duration(n30) * par0).Seconds())
	}
	return tw.Flush()
}

// countConn counts the bytes a connection reads and writes.
type countConn struct {
	net.Conn
	r, w *atomic.Int64
}

func (c countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.r.Add(int64(n))
	return n, err
}

func (c countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.w.Add(int64(n))
	return n, err
}

// timeRequests serves a body of size bytes on 127.0.0.1 and fetches it
// repeatedly: it returns the header bytes per request/response pair and the
// mean time per request with one connection and with eight.
func timeRequests(ctx context.Context, size int64) (hdr int64, seq, par time.Duration, err error) {
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 7)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, 0, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/zstd")
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})}
	go srv.Serve(ln) //nolint:errcheck // ends with Close below
	defer srv.Close()
	var rd, wr atomic.Int64
	client := func() *http.Client {
		return &http.Client{Transport: &http.Transport{
			DisableCompression: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return countConn{c, &rd, &wr}, nil
			},
		}}
	}
	url := "http://" + ln.Addr().String() + "/chunks/ab/" + strings.Repeat("ab", 32)
	get := func(c *http.Client) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, bufio.NewReader(resp.Body))
		if err == nil && n != size {
			err = fmt.Errorf("got %d bytes, want %d", n, size)
		}
		return err
	}
	// Enough requests for a stable mean, bounded to ~256 MiB of body each run.
	reqs := int(min(2000, max(16, (256<<20)/size)))
	c := client()
	if err := get(c); err != nil { // connect outside the timing
		return 0, 0, 0, err
	}
	rd.Store(0)
	wr.Store(0)
	start := time.Now()
	for range reqs {
		if err := get(c); err != nil {
			return 0, 0, 0, err
		}
	}
	seq = time.Since(start) / time.Duration(reqs)
	hdr = (rd.Load() + wr.Load() - int64(reqs)*size) / int64(reqs)

	const conns = 8
	var next atomic.Int64
	g, _ := errgroup.WithContext(ctx)
	cp := client()
	cp.Transport.(*http.Transport).MaxIdleConnsPerHost = conns
	start = time.Now()
	for range conns {
		g.Go(func() error {
			for next.Add(1) <= int64(reqs) {
				if err := get(cp); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, 0, err
	}
	par = time.Since(start) / time.Duration(reqs)
	return hdr, seq, par, nil
}
