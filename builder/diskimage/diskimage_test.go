package diskimage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/imprint-dev/imprint/internal/testenv"
)

const (
	mib      = 1 << 20
	diskSize = 12 * mib
	// Partition 3 gets data only in its first p3Written bytes; the rest stays
	// a hole, which bmaptool leaves unmapped.
	p3Written = 512 << 10
)

// tool finds a CLI or gives up on the test (testenv), naming what is missing.
func tool(t *testing.T, name string) string {
	t.Helper()
	return testenv.Tool(t, name)
}

func run(t *testing.T, stdout io.Writer, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(tool(t, name), args...)
	var out bytes.Buffer
	if stdout != nil {
		cmd.Stdout = stdout
	} else {
		cmd.Stdout = &out
	}
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// compress writes src compressed by the named CLI (zstd, xz or gzip) to dst.
func compress(t *testing.T, name, src, dst string) string {
	t.Helper()
	tool(t, name)
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Fastest level: the tests are about the container, not the ratio.
	run(t, f, name, "-1", "-c", src)
	return dst
}

type disk struct {
	path  string
	data  []byte // every byte of the image, holes included
	parts []Partition
}

// makeDisk builds a sparse GPT image with sgdisk: three partitions filled with
// seeded random data, the third only partly, and reads the expected table
// back from `sgdisk -i` rather than from our own reader.
func makeDisk(t *testing.T, dir string) disk {
	t.Helper()
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, diskSize); err != nil {
		t.Fatal(err)
	}
	// Without -q: gdisk 1.0.9 with -q silently writes nothing.
	run(t, nil, "sgdisk",
		"-n", "1:2048:+2M", "-t", "1:EF00", "-c", "1:esp",
		"-n", "2:0:+4M", "-t", "2:8304", "-c", "2:root-a",
		"-n", "3:0:+3M", "-t", "3:8300", "-c", "3:data",
		path)

	d := disk{path: path}
	for i := 1; i <= 3; i++ {
		d.parts = append(d.parts, sgdiskInfo(t, path, i))
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewChaCha8([32]byte{'i', 'm', 'p', 'r', 'i', 'n', 't'}))
	for _, p := range d.parts {
		n := p.Size
		if p.Index == 3 {
			n = p3Written
		}
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(buf, p.Start); err != nil {
			t.Fatal(err)
		}
	}
	if d.data, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	return d
}

func sgdiskInfo(t *testing.T, path string, index int) Partition {
	t.Helper()
	out := run(t, nil, "sgdisk", "-i", strconv.Itoa(index), path)
	field := func(re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("sgdisk -i %d: no match for %q in:\n%s", index, re, out)
		}
		return m[1]
	}
	sector := func(re string) int64 {
		n, err := strconv.ParseInt(field(re), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n * 512
	}
	first, last := sector(`First sector: (\d+)`), sector(`Last sector: (\d+)`)
	return Partition{
		Index: index,
		Name:  field(`Partition name: '(.*)'`),
		Type:  field(`Partition GUID code: ([0-9A-F-]+)`),
		GUID:  field(`Partition unique GUID: ([0-9A-F-]+)`),
		Start: first,
		Size:  last - first + 512,
	}
}

func open(t *testing.T, path, bmapPath, tmpDir string) *Image {
	t.Helper()
	im, err := Open(context.Background(), path, bmapPath, tmpDir)
	if err != nil {
		t.Fatalf("Open(%s, bmap %q): %v", filepath.Base(path), bmapPath, err)
	}
	t.Cleanup(func() { im.Close() })
	return im
}

func emptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("temp dir not empty: %s", e.Name())
	}
}

// checkDisk compares the table and every partition's bytes with d.
func checkDisk(t *testing.T, im *Image, d disk) {
	t.Helper()
	if im.Size() != int64(len(d.data)) {
		t.Errorf("Size() = %d, want %d", im.Size(), len(d.data))
	}
	got := im.Partitions()
	if fmt.Sprint(got) != fmt.Sprint(d.parts) {
		t.Fatalf("Partitions():\n got %+v\nwant %+v", got, d.parts)
	}
	for _, p := range got {
		b, err := io.ReadAll(p.Reader(im))
		if err != nil {
			t.Fatalf("partition %d: %v", p.Index, err)
		}
		if !bytes.Equal(b, d.data[p.Start:p.Start+p.Size]) {
			t.Errorf("partition %d (%s): bytes differ from the source", p.Index, p.Name)
		}
	}
}

func TestOpenFormats(t *testing.T) {
	dir := t.TempDir()
	d := makeDisk(t, dir)
	tests := []struct {
		name string
		file func(t *testing.T) string
	}{
		{"plain", func(*testing.T) string { return d.path }},
		{"zstd", func(t *testing.T) string { return compress(t, "zstd", d.path, d.path+".zst") }},
		{"xz", func(t *testing.T) string { return compress(t, "xz", d.path, d.path+".xz") }},
		{"gzip", func(t *testing.T) string { return compress(t, "gzip", d.path, d.path+".gz") }},
		// Detection goes by magic bytes, not by name.
		{"zstd without extension", func(t *testing.T) string {
			return compress(t, "zstd", d.path, filepath.Join(dir, "disk-zstd.bin"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.file(t)
			tmp := t.TempDir()
			im := open(t, path, "", tmp)
			if im.SectorSize() != 512 {
				t.Errorf("SectorSize() = %d, want 512", im.SectorSize())
			}
			if tt.name == "plain" && im.f.Name() != path {
				t.Errorf("plain image was copied to %s instead of read in place", im.f.Name())
			}
			checkDisk(t, im, d)
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			emptyDir(t, tmp)
		})
	}
}

// TestBackupGPT damages the primary GPT header: go-diskfs falls back to the
// backup in the last sector, which needs a read that ends exactly at the end
// of the image to succeed.
func TestBackupGPT(t *testing.T) {
	dir := t.TempDir()
	d := makeDisk(t, dir)
	b := bytes.Clone(d.data)
	b[512+40] ^= 0xff // first usable LBA in the primary header: its CRC fails
	damaged := filepath.Join(dir, "primary-damaged.img")
	write(t, damaged, b)
	d.data = b
	checkDisk(t, open(t, damaged, "", ""), d)
}

// bmapFor runs bmaptool and skips the test when the file system under the
// temp dir reports no holes, which would leave nothing unmapped to test.
func bmapFor(t *testing.T, img string) string {
	t.Helper()
	out := img + ".bmap"
	run(t, nil, "bmaptool", "create", "-o", out, img)
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	num := func(tag string) string {
		return regexp.MustCompile(`<` + tag + `>\s*(\d+)\s*</`).FindStringSubmatch(string(raw))[1]
	}
	if num("BlocksCount") == num("MappedBlocksCount") {
		testenv.Skipf(t, "bmaptool found no holes in the test image (file system without SEEK_HOLE?)")
	}
	return out
}

func TestBmap(t *testing.T) {
	dir := t.TempDir()
	d := makeDisk(t, dir)
	bm := bmapFor(t, d.path)

	// Garbage where the bmap maps nothing proves reads there never touch the
	// file: through the bmap it must read as zeros, as in d.data.
	p3 := d.parts[2]
	junkAt := p3.Start + p3Written + 256<<10
	junk := bytes.Repeat([]byte{0xa5}, 100<<10)
	dirty := filepath.Join(dir, "dirty.img")
	withJunk := bytes.Clone(d.data)
	copy(withJunk[junkAt:], junk)
	if err := os.WriteFile(dirty, withJunk, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		file func(t *testing.T) string
	}{
		{"plain", func(*testing.T) string { return dirty }},
		{"zstd", func(t *testing.T) string { return compress(t, "zstd", dirty, dirty+".zst") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.file(t)
			tmp := t.TempDir()

			raw := open(t, path, "", tmp)
			b := make([]byte, len(junk))
			if _, err := raw.ReadAt(b, junkAt); err != nil || !bytes.Equal(b, junk) {
				t.Fatalf("without bmap the junk should be visible (err %v)", err)
			}

			im := open(t, path, bm, tmp)
			checkDisk(t, im, d)
			if err := im.VerifyBmap(context.Background()); err != nil {
				t.Fatalf("VerifyBmap: %v", err)
			}

			// Odd-sized reads at random offsets cross mapped/unmapped edges.
			rng := rand.New(rand.NewPCG(1, 2))
			for range 300 {
				off := rng.Int64N(int64(len(d.data)))
				buf := make([]byte, rng.IntN(300<<10)+1)
				n, err := im.ReadAt(buf, off)
				want := d.data[off:min(off+int64(len(buf)), int64(len(d.data)))]
				if n != len(want) || !bytes.Equal(buf[:n], want) {
					t.Fatalf("ReadAt(%d bytes, %d) = %d bytes, %v: data differs", len(buf), off, n, err)
				}
				if wantEOF := n < len(buf); wantEOF != (err == io.EOF) || (!wantEOF && err != nil) {
					t.Fatalf("ReadAt(%d bytes, %d): err %v", len(buf), off, err)
				}
			}
			if n, err := im.ReadAt(make([]byte, 1), im.Size()); n != 0 || err != io.EOF {
				t.Errorf("ReadAt at end = %d, %v; want 0, EOF", n, err)
			}

			raw.Close()
			im.Close()
			emptyDir(t, tmp)
		})
	}
}

// reseal recomputes a bmap's own checksum the way bmaptool does: over the
// file with the checksum text replaced by zeros.
func reseal(raw []byte, tag string, newHash func() hash.Hash) []byte {
	re := regexp.MustCompile(`(<` + tag + `>\s*)([0-9a-f]+)`)
	n := 2 * newHash().Size()
	zeroed := re.ReplaceAll(raw, []byte("${1}"+strings.Repeat("0", n)))
	h := newHash()
	h.Write(zeroed)
	return re.ReplaceAll(zeroed, []byte("${1}"+hex.EncodeToString(h.Sum(nil))))
}

func TestBmapChecksum(t *testing.T) {
	dir := t.TempDir()
	d := makeDisk(t, dir)
	good := bmapFor(t, d.path)
	zst := compress(t, "zstd", d.path, d.path+".zst")
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}

	// Flip one digit of the second range's checksum.
	sums := regexp.MustCompile(`chksum="([0-9a-f]+)"`).FindAllSubmatchIndex(raw, -1)
	if len(sums) < 2 {
		t.Fatalf("expected several ranges in the bmap, got %d", len(sums))
	}
	edited := bytes.Clone(raw)
	i := sums[1][2]
	edited[i] = "1f"[btoi(edited[i] == '1')]
	unsealed := filepath.Join(dir, "unsealed.bmap")
	sealed := filepath.Join(dir, "sealed.bmap")
	write(t, unsealed, edited)
	write(t, sealed, reseal(edited, "BmapFileChecksum", sha256.New))

	// Damage one mapped byte of a copy of the image (inside partition 2).
	damaged := filepath.Join(dir, "damaged.img")
	bad := bytes.Clone(d.data)
	bad[d.parts[1].Start+12345] ^= 0xff
	write(t, damaged, bad)

	tests := []struct {
		name, img, bmap string
		openErr         error // from Open
		verifyErr       error // from VerifyBmap, when Open succeeds
	}{
		{"plain, range sum edited", d.path, sealed, nil, ErrBmapChecksum},
		{"zstd, range sum edited", zst, sealed, ErrBmapChecksum, nil},
		{"plain, bmap edited without resealing", d.path, unsealed, ErrBmap, nil},
		{"zstd, bmap edited without resealing", zst, unsealed, ErrBmap, nil},
		{"plain, image damaged", damaged, good, nil, ErrBmapChecksum},
		{"plain, good", d.path, good, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			im, err := Open(context.Background(), tt.img, tt.bmap, tmp)
			if !errors.Is(err, tt.openErr) || (tt.openErr == nil) != (err == nil) {
				t.Fatalf("Open: %v, want %v", err, tt.openErr)
			}
			if err != nil {
				t.Logf("Open: %v", err)
				emptyDir(t, tmp)
				return
			}
			defer im.Close()
			err = im.VerifyBmap(context.Background())
			if !errors.Is(err, tt.verifyErr) || (tt.verifyErr == nil) != (err == nil) {
				t.Fatalf("VerifyBmap: %v, want %v", err, tt.verifyErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "blocks ") {
					t.Errorf("error does not name the range: %v", err)
				}
				t.Logf("VerifyBmap: %v", err)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBmapOtherImage(t *testing.T) {
	dir := t.TempDir()
	d := makeDisk(t, dir)
	other := filepath.Join(dir, "other.img")
	write(t, other, d.data)
	if err := os.Truncate(other, diskSize+mib); err != nil {
		t.Fatal(err)
	}
	bm := bmapFor(t, other)
	zst := compress(t, "zstd", d.path, d.path+".zst")
	for _, img := range []string{d.path, zst} {
		t.Run(filepath.Ext(img), func(t *testing.T) {
			tmp := t.TempDir()
			_, err := Open(context.Background(), img, bm, tmp)
			if !errors.Is(err, ErrBmap) {
				t.Fatalf("Open with another image's bmap: %v, want ErrBmap", err)
			}
			t.Log(err)
			emptyDir(t, tmp)
		})
	}
}

// TestBmapOldFormats rewrites bmaptool's ranges in the 1.0 (no checksums),
// 1.3 (SHA-1, single-block ranges) and 2.0-with-md5 formats.
func TestBmapOldFormats(t *testing.T) {
	dir := t.TempDir()
	d := makeDisk(t, dir)
	raw, err := os.ReadFile(bmapFor(t, d.path))
	if err != nil {
		t.Fatal(err)
	}
	header := regexp.MustCompile(`(?s)<ImageSize>.*?</MappedBlocksCount>`).Find(raw)
	var ranges [][2]int64
	for _, m := range regexp.MustCompile(`>\s*(\d+)-(\d+)\s*</Range>`).FindAllSubmatch(raw, -1) {
		a, _ := strconv.ParseInt(string(m[1]), 10, 64)
		b, _ := strconv.ParseInt(string(m[2]), 10, 64)
		ranges = append(ranges, [2]int64{a, b})
	}
	// Split the first block off as a single-block range, "a" alone.
	if ranges[0][1] > ranges[0][0] {
		ranges = append([][2]int64{{ranges[0][0], ranges[0][0]}, {ranges[0][0] + 1, ranges[0][1]}}, ranges[1:]...)
	}

	build := func(version, sumAttr, fileTag, sumType string, newHash func() hash.Hash, corruptRange int) []byte {
		var b bytes.Buffer
		fmt.Fprintf(&b, "<?xml version=\"1.0\" ?>\n<bmap version=\"%s\">\n%s\n", version, header)
		if sumType != "" {
			fmt.Fprintf(&b, "<ChecksumType>%s</ChecksumType>\n", sumType)
		}
		if fileTag != "" {
			fmt.Fprintf(&b, "<%s> %s </%s>\n", fileTag, strings.Repeat("0", 2*newHash().Size()), fileTag)
		}
		b.WriteString("<BlockMap>\n")
		for i, r := range ranges {
			attr := ""
			if sumAttr != "" {
				h := newHash()
				h.Write(d.data[r[0]*4096 : (r[1]+1)*4096])
				sum := h.Sum(nil)
				if i == corruptRange {
					sum[0] ^= 1
				}
				attr = fmt.Sprintf(` %s="%x"`, sumAttr, sum)
			}
			text := fmt.Sprintf("%d-%d", r[0], r[1])
			if r[0] == r[1] {
				text = strconv.FormatInt(r[0], 10)
			}
			fmt.Fprintf(&b, "<Range%s> %s </Range>\n", attr, text)
		}
		b.WriteString("</BlockMap>\n</bmap>\n")
		if fileTag == "" {
			return b.Bytes()
		}
		return reseal(b.Bytes(), fileTag, newHash)
	}
	if !bytes.Contains(header, []byte("<BlockSize> 4096 </BlockSize>")) {
		t.Fatalf("test assumes bmaptool's 4096-byte blocks:\n%s", header)
	}

	tests := []struct {
		name      string
		bmap      []byte
		verifyErr error
	}{
		{"1.0 no checksums", build("1.0", "", "", "", nil, -1), nil},
		{"1.3 sha1", build("1.3", "sha1", "BmapFileSHA1", "", sha1.New, -1), nil},
		{"1.3 sha1, bad single-block range", build("1.3", "sha1", "BmapFileSHA1", "", sha1.New, 0), ErrBmapChecksum},
		{"1.4 md5", build("1.4", "chksum", "BmapFileChecksum", "md5", md5.New, -1), nil},
		{"2.0 md5, bad range", build("2.0", "chksum", "BmapFileChecksum", "md5", md5.New, 2), ErrBmapChecksum},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, fmt.Sprintf("old%d.bmap", i))
			write(t, p, tt.bmap)
			im := open(t, d.path, p, "")
			checkDisk(t, im, d)
			if err := im.VerifyBmap(context.Background()); !errors.Is(err, tt.verifyErr) || (err == nil) != (tt.verifyErr == nil) {
				t.Fatalf("VerifyBmap: %v, want %v", err, tt.verifyErr)
			}
		})
	}
}

func TestBmapInvalid(t *testing.T) {
	// Version 1.0 carries no checksum of itself, so these need no sealing.
	bm := func(blockSize, blocks, mapped string, ranges ...string) string {
		s := `<bmap version="1.0"><ImageSize> 40960 </ImageSize><BlockSize>` + blockSize +
			`</BlockSize><BlocksCount>` + blocks + `</BlocksCount><MappedBlocksCount>` + mapped +
			`</MappedBlocksCount><BlockMap>`
		for _, r := range ranges {
			s += "<Range>" + r + "</Range>"
		}
		return s + "</BlockMap></bmap>"
	}
	tests := []struct{ name, xml, want string }{
		{"valid", bm("4096", "10", "3", "0-1", "5"), ""},
		{"block size 0", bm("0", "10", "0"), "block size is 0"},
		{"blocks count off", bm("4096", "11", "0"), "do not make an image"},
		{"unsorted", bm("4096", "10", "3", "5", "0-1"), "not after the previous"},
		{"overlapping", bm("4096", "10", "4", "0-2", "2-3"), "not after the previous"},
		{"outside", bm("4096", "10", "2", "9-10"), "outside"},
		{"reversed", bm("4096", "10", "2", "3-2"), "bad range"},
		{"mapped count off", bm("4096", "10", "5", "0-1"), "MappedBlocksCount"},
		{"missing element", `<bmap version="1.0"><ImageSize>1</ImageSize></bmap>`, "missing <BlockSize>"},
		{"newer version", `<bmap version="3.0"></bmap>`, "newer"},
		{"not XML", `hello`, "not bmap XML"},
		{"2.0 without file checksum", strings.Replace(bm("4096", "10", "0"), `"1.0"`, `"2.0"`, 1),
			"missing <ChecksumType>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseBmap([]byte(tt.xml))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseBmap: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNotGPT(t *testing.T) {
	dir := t.TempDir()
	mbr := filepath.Join(dir, "mbr.img")
	write(t, mbr, make([]byte, 8*mib))
	sfdisk := exec.Command(tool(t, "sfdisk"), "--no-reread", "--no-tell-kernel", mbr)
	sfdisk.Stdin = strings.NewReader("label: dos\n,4M,83\n,,83\n")
	if out, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	random := filepath.Join(dir, "random.img")
	junk := make([]byte, 2*mib)
	rand.NewChaCha8([32]byte{1}).Read(junk)
	write(t, random, junk)
	empty := filepath.Join(dir, "empty.img")
	write(t, empty, nil)
	tiny := filepath.Join(dir, "tiny.img")
	write(t, tiny, []byte("not a disk"))

	tests := []struct {
		name, path, want string
	}{
		{"MBR only", mbr, "MBR (DOS)"},
		{"random bytes", random, ""},
		{"random bytes, zstd", "zstd:" + random, ""},
		{"empty", empty, "empty"},
		{"tiny", tiny, "only 10 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if src, ok := strings.CutPrefix(path, "zstd:"); ok {
				path = compress(t, "zstd", src, src+".zst")
			}
			tmp := t.TempDir()
			_, err := Open(context.Background(), path, "", tmp)
			if !errors.Is(err, ErrNotGPT) {
				t.Fatalf("Open: %v, want ErrNotGPT", err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, path+": not a GPT disk image: ") || !strings.Contains(msg, tt.want) {
				t.Errorf("unexpected message: %v", msg)
			}
			t.Log(err)
			emptyDir(t, tmp)
		})
	}
}

func TestCorrupt(t *testing.T) {
	dir := t.TempDir()
	d := makeDisk(t, dir)
	truncated := func(name, ext string) func(t *testing.T) string {
		return func(t *testing.T) string {
			full := compress(t, name, d.path, filepath.Join(t.TempDir(), "disk.img"+ext))
			b, err := os.ReadFile(full)
			if err != nil {
				t.Fatal(err)
			}
			write(t, full, b[:len(b)/2])
			return full
		}
	}
	tests := []struct {
		name string
		file func(t *testing.T) string
		want string
	}{
		{"truncated zstd", truncated("zstd", ".zst"), "truncated or corrupt zstd stream"},
		{"truncated xz", truncated("xz", ".xz"), "truncated or corrupt xz stream"},
		{"truncated gzip", truncated("gzip", ".gz"), "truncated or corrupt gzip stream"},
		{"plain named .zst", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "disk.img.zst")
			write(t, p, d.data)
			return p
		}, "does not start with a zstd header"},
		{"plain image cut short", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "short.img")
			write(t, p, d.data[:9*mib])
			return p
		}, "partition 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.file(t)
			tmp := t.TempDir()
			_, err := Open(context.Background(), path, "", tmp)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: %v, want ErrCorrupt mentioning %q", err, tt.want)
			}
			t.Log(err)
			emptyDir(t, tmp)
		})
	}
}

func TestCancel(t *testing.T) {
	dir := t.TempDir()
	d := makeDisk(t, dir)
	zst := compress(t, "zstd", d.path, d.path+".zst")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tmp := t.TempDir()
	if _, err := Open(ctx, zst, "", tmp); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with a cancelled context: %v", err)
	}
	emptyDir(t, tmp)
}

// Test4Kn writes a GPT at 4096-byte sectors with go-diskfs, which sgdisk
// cannot do on a plain file, to exercise the 4096 fallback.
func Test4Kn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "4kn.img")
	const size = 16 * mib
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	table := &gpt.Table{
		LogicalSectorSize:  4096,
		PhysicalSectorSize: 4096,
		ProtectiveMBR:      true,
		Partitions: []*gpt.Partition{
			{Index: 1, Start: 256, End: 256 + 1023, Type: gpt.LinuxFilesystem, Name: "one"},
			{Index: 2, Start: 2048, End: 2048 + 511, Type: gpt.LinuxFilesystem, Name: "two"},
		},
	}
	w, err := file.New(f, false).Writable()
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Write(w, size); err != nil {
		t.Fatal(err)
	}
	f.Close()

	im := open(t, path, "", "")
	if im.SectorSize() != 4096 {
		t.Errorf("SectorSize() = %d, want 4096", im.SectorSize())
	}
	parts := im.Partitions()
	want := [][2]int64{{256 * 4096, 1024 * 4096}, {2048 * 4096, 512 * 4096}}
	if len(parts) != len(want) {
		t.Fatalf("got %d partitions, want %d: %+v", len(parts), len(want), parts)
	}
	for i, p := range parts {
		if p.Start != want[i][0] || p.Size != want[i][1] || p.Type != strings.ToUpper(string(gpt.LinuxFilesystem)) {
			t.Errorf("partition %d = %+v, want start %d size %d", i+1, p, want[i][0], want[i][1])
		}
	}
}
