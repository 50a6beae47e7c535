// Package diskimage opens a whole-disk image (raw, or compressed with zstd,
// xz or gzip, optionally with a bmaptool block map) for `imprint build
// --disk-image` and exposes its GPT partitions so they can be chunked.
//
// Compressed images are decompressed once into a sparse temporary file,
// because chunking and GPT parsing need random access and none of these
// formats offers it. Raw images are read in place.
package diskimage

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Errors callers act on. Each is wrapped with the file name and details.
var (
	// ErrNotGPT: the image has no readable GPT (MBR-only, not a disk, empty).
	ErrNotGPT = errors.New("not a GPT disk image")
	// ErrCorrupt: the image or its compressed stream is truncated or damaged.
	ErrCorrupt = errors.New("truncated or corrupt")
	// ErrBmap: the bmap file is malformed, damaged, or for another image.
	ErrBmap = errors.New("invalid bmap")
	// ErrBmapChecksum: mapped image data does not match the bmap's checksum.
	ErrBmapChecksum = errors.New("bmap checksum mismatch")
)

const (
	// sparseBlock is the granularity at which all-zero output is skipped
	// rather than written, leaving holes in the temporary file.
	sparseBlock = 64 << 10
	// ioBuffer is the size of reads from decompressors and of verify reads.
	ioBuffer = 1 << 20
	// zstdMaxWindow admits images compressed with `zstd --long=31`, common
	// for big disk images; the memory is only taken if a frame asks for it.
	zstdMaxWindow = 1 << 31
)

// Image is an opened whole-disk image, readable at random offsets.
// ReadAt may be called concurrently; Close may not.
type Image struct {
	name string   // the path given to Open, for messages
	f    *os.File // the raw image, or the decompressed temporary file
	size int64
	// tmp is the temporary file's path while it still has one; it is
	// normally unlinked right after creation so a crash leaves nothing.
	tmp string
	bm  *bmap
	// sparse: reads consult bm and return zeros outside mapped ranges
	// (raw image with a bmap; a decompressed file already has holes there).
	sparse bool
	// bmapChecked: every mapped range was verified during decompression.
	bmapChecked bool
	sectorSize  int
	parts       []Partition
}

// Partition is one used GPT entry of an Image.
type Partition struct {
	Index       int    // 1-based GPT index
	Name        string // GPT partition name
	Type        string // type GUID, upper case
	GUID        string // partition GUID, upper case
	Start, Size int64  // bytes
}

// Reader returns a reader over the partition's bytes in im.
func (p Partition) Reader(im *Image) *io.SectionReader {
	return io.NewSectionReader(im, p.Start, p.Size)
}

// Open opens the disk image at path, decompressing it into tmpDir (the
// system default if empty) when it is compressed, and reads its GPT.
// bmapPath, if not empty, names a bmaptool block map of the uncompressed
// image: ranges it does not map read as zeros. Compressed images have their
// mapped ranges verified against the bmap while decompressing; for raw images
// call VerifyBmap.
func Open(ctx context.Context, path, bmapPath, tmpDir string) (_ *Image, err error) {
	var bm *bmap
	if bmapPath != "" {
		if bm, err = readBmap(bmapPath); err != nil {
			return nil, err
		}
	}
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	im := &Image{name: path, bm: bm}
	defer func() {
		if err != nil {
			im.Close()
		}
	}()

	var head [8]byte
	n, err := src.ReadAt(head[:], 0)
	if err != nil && err != io.EOF {
		src.Close()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	kind, err := detect(path, head[:n])
	if err != nil {
		src.Close()
		return nil, err
	}

	if kind == "" {
		im.f = src
		// Seek rather than Stat so that a block device reports its size.
		if im.size, err = src.Seek(0, io.SeekEnd); err != nil {
			return nil, fmt.Errorf("size of %s: %w", path, err)
		}
		if bm != nil {
			if err := bm.checkSize(path, im.size); err != nil {
				return nil, err
			}
			if r := bm.ranges; len(r) > 0 && r[len(r)-1].end > im.size {
				l := r[len(r)-1]
				return nil, fmt.Errorf("%s: %w image: it ends at byte %d, inside mapped blocks %d-%d",
					path, ErrCorrupt, im.size, l.first, l.last)
			}
			im.sparse = true
		}
	} else {
		err = im.decompress(ctx, src, kind, tmpDir)
		src.Close()
		if err != nil {
			return nil, err
		}
		im.bmapChecked = bm != nil
	}

	if err := im.readGPT(); err != nil {
		return nil, err
	}
	return im, nil
}

// Size returns the size of the whole (decompressed) disk in bytes.
func (im *Image) Size() int64 { return im.size }

// SectorSize returns the logical sector size the GPT was found at (512 or
// 4096).
func (im *Image) SectorSize() int { return im.sectorSize }

// Partitions returns the used GPT entries in table order.
func (im *Image) Partitions() []Partition { return slices.Clone(im.parts) }

// ReadAt reads the disk at off. Ranges a bmap leaves unmapped read as zeros
// without touching the file.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: read at negative offset %d", im.name, off)
	}
	if off >= im.size {
		return 0, io.EOF
	}
	// A read that ends exactly at the end returns nil, not io.EOF:
	// go-diskfs treats any error as failure when reading the backup GPT in
	// the last sector.
	var atEnd error
	if rest := im.size - off; int64(len(p)) > rest {
		p, atEnd = p[:rest], io.EOF
	}
	if !im.sparse {
		n, err := im.f.ReadAt(p, off)
		return n, shortRead(n, len(p), err, atEnd)
	}

	end := off + int64(len(p))
	pos := off
	for i := im.bm.find(off); pos < end; i++ {
		if i >= len(im.bm.ranges) || im.bm.ranges[i].start >= end {
			clear(p[pos-off:])
			break
		}
		r := im.bm.ranges[i]
		if r.start > pos {
			clear(p[pos-off : r.start-off])
			pos = r.start
		}
		stop := min(r.end, end)
		n, err := im.f.ReadAt(p[pos-off:stop-off], pos)
		if err = shortRead(n, int(stop-pos), err, nil); err != nil {
			return int(pos-off) + n, err
		}
		pos = stop
	}
	return len(p), atEnd
}

// shortRead turns an early io.EOF from the file into io.ErrUnexpectedEOF:
// the file shrank below the size Open saw, which is not a normal end.
func shortRead(n, want int, err, atEnd error) error {
	switch {
	case err == io.EOF && n < want:
		return io.ErrUnexpectedEOF
	case err == nil || err == io.EOF:
		return atEnd
	}
	return err
}

// VerifyBmap checks every mapped range of a raw image against the bmap's
// checksums. It reads all mapped data, which is why Open does not do it for
// raw images. It returns nil when there is no bmap, the bmap carries no
// checksums, or the ranges were already verified while decompressing.
func (im *Image) VerifyBmap(ctx context.Context) error {
	if im.bm == nil || im.bmapChecked || im.bm.newHash == nil {
		return nil
	}
	buf := make([]byte, ioBuffer)
	for _, r := range im.bm.ranges {
		if r.sum == "" {
			continue
		}
		h := im.bm.newHash()
		for pos := r.start; pos < r.end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := buf[:min(int64(len(buf)), r.end-pos)]
			n, err := im.f.ReadAt(b, pos)
			if err = shortRead(n, len(b), err, nil); err != nil {
				return fmt.Errorf("read %s: %w", im.name, err)
			}
			h.Write(b)
			pos += int64(n)
		}
		if got := h.Sum(nil); hex.EncodeToString(got) != r.sum {
			return im.bm.mismatch(im.name, r, got)
		}
	}
	return nil
}

// Close closes the image and removes its temporary file, if any.
func (im *Image) Close() error {
	var errs []error
	if im.f != nil {
		errs = append(errs, im.f.Close())
		im.f = nil
	}
	if im.tmp != "" {
		if err := os.Remove(im.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		im.tmp = ""
	}
	return errors.Join(errs...)
}

// detect names the compression of a file from its first bytes. The name
// only matters when it promises compression the content lacks: that is a
// damaged download far more often than a misnamed raw image.
func detect(path string, head []byte) (string, error) {
	kind := ""
	switch {
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		kind = "zstd"
	case len(head) >= 4 && head[0]&0xf0 == 0x50 && bytes.Equal(head[1:4], []byte{0x2a, 0x4d, 0x18}):
		kind = "zstd" // a skippable frame, which zstd streams may start with
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		kind = "xz"
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b, 0x08}):
		kind = "gzip"
	case len(head) >= 4 && bytes.HasPrefix(head, []byte("BZh")) && head[3] >= '1' && head[3] <= '9':
		return "", fmt.Errorf("%s: bzip2-compressed images are not supported (use zstd, xz or gzip): %w", path, errors.ErrUnsupported)
	case bytes.HasPrefix(head, []byte{0x04, 0x22, 0x4d, 0x18}):
		return "", fmt.Errorf("%s: lz4-compressed images are not supported (use zstd, xz or gzip): %w", path, errors.ErrUnsupported)
	}
	if kind == "" {
		named := map[string]string{".zst": "zstd", ".zstd": "zstd", ".xz": "xz", ".gz": "gzip", ".gzip": "gzip"}
		if k, ok := named[strings.ToLower(filepath.Ext(path))]; ok {
			return "", fmt.Errorf("%s: %w image: the name says %s, but the file does not start with a %s header",
				path, ErrCorrupt, k, k)
		}
	}
	return kind, nil
}

// decompress streams src into a new sparse temporary file that becomes
// im.f. With a bmap, only mapped ranges are written and each is checked
// against its checksum on the way.
func (im *Image) decompress(ctx context.Context, src *os.File, kind, tmpDir string) error {
	in := &ctxReader{ctx: ctx, r: src}
	var dec io.Reader
	var err error
	switch kind {
	case "zstd":
		var z *zstd.Decoder
		z, err = zstd.NewReader(in, zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err == nil {
			defer z.Close()
			dec = z
		}
	case "xz":
		dec, err = xz.NewReader(in)
	case "gzip":
		var g *gzip.Reader
		g, err = gzip.NewReader(in)
		if err == nil {
			defer g.Close()
			dec = g
		}
	}
	if err != nil {
		return im.streamError(ctx, in, kind, err)
	}

	out, err := os.CreateTemp(tmpDir, "imprint-diskimage-*.img")
	if err != nil {
		return fmt.Errorf("decompress %s: %w", im.name, err)
	}
	im.f = out
	// Unlinked while open, the file vanishes with the process even if it
	// never reaches Close; keep the path only where unlinking fails.
	if os.Remove(out.Name()) != nil {
		im.tmp = out.Name()
	}

	w := &sparseWriter{f: out, bm: im.bm, name: im.name, zero: make([]byte, sparseBlock)}
	buf := make([]byte, ioBuffer)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("decompress %s: %w", im.name, err)
		}
		n, rerr := fill(dec, buf)
		if err := w.write(buf[:n]); err != nil {
			return err
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return im.streamError(ctx, in, kind, rerr)
		}
	}
	im.size = w.off
	if err := out.Truncate(im.size); err != nil {
		return fmt.Errorf("decompress %s: %w", im.name, err)
	}
	if im.bm != nil {
		if err := im.bm.checkSize(im.name+" (decompressed)", im.size); err != nil {
			return err
		}
		if w.ri < len(im.bm.ranges) {
			r := im.bm.ranges[w.ri]
			return fmt.Errorf("%s: %w image: it ends at byte %d, inside mapped blocks %d-%d",
				im.name, ErrCorrupt, im.size, r.first, r.last)
		}
	}
	return nil
}

// streamError tells cancellation and read errors of the compressed file
// apart from a damaged stream, which is what every other decoder error means.
func (im *Image) streamError(ctx context.Context, in *ctxReader, kind string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("decompress %s: %w", im.name, cerr)
	}
	if rerr := in.failure(); rerr != nil {
		return fmt.Errorf("read %s: %w", im.name, rerr)
	}
	return fmt.Errorf("%s: %w %s stream: %w", im.name, ErrCorrupt, kind, err)
}

// fill reads until buf is full or the stream ends. Unlike io.ReadFull it
// keeps a clean end (io.EOF) apart from a decoder's own io.ErrUnexpectedEOF,
// which means a truncated stream.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ctxReader stops the compressed input on cancellation and remembers read
// errors, so they are not reported as a corrupt stream. Decoders may read
// from another goroutine, hence the lock.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
	}
	return n, err
}

func (c *ctxReader) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// sparseWriter writes the decompressed stream at increasing offsets,
// leaving holes for all-zero blocks and, with a bmap, for unmapped ranges,
// whose contents the bmap declares meaningless.
type sparseWriter struct {
	f    *os.File
	bm   *bmap
	name string
	zero []byte
	off  int64     // stream offset of the next byte
	ri   int       // next bmap range not yet completed
	h    hash.Hash // checksum of the current range so far
}

func (w *sparseWriter) write(b []byte) error {
	if w.bm == nil {
		err := w.writeData(b, w.off)
		w.off += int64(len(b))
		return err
	}
	for len(b) > 0 {
		if w.ri >= len(w.bm.ranges) {
			w.off += int64(len(b))
			return nil
		}
		r := w.bm.ranges[w.ri]
		if w.off < r.start {
			skip := min(int64(len(b)), r.start-w.off)
			b, w.off = b[skip:], w.off+skip
			continue
		}
		seg := b[:min(int64(len(b)), r.end-w.off)]
		if r.sum != "" {
			if w.h == nil {
				w.h = w.bm.newHash()
			}
			w.h.Write(seg)
		}
		if err := w.writeData(seg, w.off); err != nil {
			return err
		}
		b, w.off = b[len(seg):], w.off+int64(len(seg))
		if w.off == r.end {
			if w.h != nil {
				got := w.h.Sum(nil)
				w.h = nil
				if hex.EncodeToString(got) != r.sum {
					return w.bm.mismatch(w.name, r, got)
				}
			}
			w.ri++
		}
	}
	return nil
}

// writeData writes b at off, coalescing non-zero sparseBlock-aligned pieces
// into single writes and skipping all-zero ones.
func (w *sparseWriter) writeData(b []byte, off int64) error {
	piece := func(at int64, left int) int {
		return int(min(int64(left), sparseBlock-at%sparseBlock))
	}
	for len(b) > 0 {
		n := piece(off, len(b))
		if bytes.Equal(b[:n], w.zero[:n]) {
			b, off = b[n:], off+int64(n)
			continue
		}
		for n < len(b) {
			m := piece(off+int64(n), len(b)-n)
			if bytes.Equal(b[n:n+m], w.zero[:m]) {
				break
			}
			n += m
		}
		if _, err := w.f.WriteAt(b[:n], off); err != nil {
			return fmt.Errorf("decompress %s: %w", w.name, err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// readGPT reads the partition table, at 512-byte sectors first and then at
// 4096 for 4Kn disks, and checks every partition lies inside the image.
func (im *Image) readGPT() error {
	switch {
	case im.size == 0:
		return fmt.Errorf("%s: %w: the image is empty", im.name, ErrNotGPT)
	case im.size < 2*512:
		return fmt.Errorf("%s: %w: the image is only %d bytes", im.name, ErrNotGPT, im.size)
	}
	var table *gpt.Table
	var firstErr error
	for _, ss := range []int{512, 4096} {
		t, err := gpt.Read(&gptFile{SectionReader: io.NewSectionReader(im, 0, im.size), size: im.size}, ss, ss)
		if err == nil {
			table, im.sectorSize = t, ss
			break
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if table == nil {
		if im.hasMBR() {
			return fmt.Errorf("%s: %w: it has an MBR (DOS) partition table; convert it with `sgdisk --mbrtogpt` first",
				im.name, ErrNotGPT)
		}
		return fmt.Errorf("%s: %w: %w", im.name, ErrNotGPT, firstErr)
	}

	ss := uint64(im.sectorSize)
	sectors := uint64(im.size) / ss
	for _, p := range table.Partitions {
		if p.End < p.Start || p.End >= sectors {
			return fmt.Errorf("%s: %w image: partition %d (%q) spans sectors %d-%d, but the image has %d sectors",
				im.name, ErrCorrupt, p.Index, p.Name, p.Start, p.End, sectors)
		}
		im.parts = append(im.parts, Partition{
			Index: p.Index,
			Name:  p.Name,
			Type:  strings.ToUpper(string(p.Type)),
			GUID:  strings.ToUpper(p.GUID),
			Start: int64(p.Start * ss),
			Size:  int64((p.End - p.Start + 1) * ss),
		})
	}
	return nil
}

// hasMBR reports whether sector 0 holds a DOS partition table with at least
// one partition that is not GPT's protective one, to explain the failure.
func (im *Image) hasMBR() bool {
	var s [512]byte
	if n, _ := im.ReadAt(s[:], 0); n < len(s) || binary.LittleEndian.Uint16(s[510:]) != 0xaa55 {
		return false
	}
	for i := range 4 {
		if t := s[446+16*i+4]; t != 0 && t != 0xee {
			return true
		}
	}
	return false
}

// gptFile adapts an Image to the file interface go-diskfs reads from.
type gptFile struct {
	*io.SectionReader
	size int64
}

func (g *gptFile) Stat() (fs.FileInfo, error) { return gptFileInfo{size: g.size}, nil }
func (g *gptFile) Close() error               { return nil }

type gptFileInfo struct{ size int64 }

func (i gptFileInfo) Name() string       { return "disk" }
func (i gptFileInfo) Size() int64        { return i.size }
func (i gptFileInfo) Mode() fs.FileMode  { return 0o400 }
func (i gptFileInfo) ModTime() time.Time { return time.Time{} }
func (i gptFileInfo) IsDir() bool        { return false }
func (i gptFileInfo) Sys() any           { return nil }
