package diskimage

import (
	"bytes"
	"crypto/md5"  // weak, but old bmaps use it and it only guards against accidents
	"crypto/sha1" // likewise, for bmap 1.3
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// maxBmapSize bounds how much of a bmap file is read into memory. Real bmaps
// are kilobytes to a few megabytes; anything bigger is not a bmap.
const maxBmapSize = 256 << 20

// bmapRange is one <Range> of a bmap, in bytes, clipped to the image size.
type bmapRange struct {
	first, last int64  // block numbers as written in the bmap, for messages
	start, end  int64  // byte offsets [start, end)
	sum         string // lower-case hex, "" when the bmap has no checksums
}

// bmap is a parsed and validated bmaptool block map.
type bmap struct {
	path      string
	imageSize int64
	blockSize int64
	sumType   string // "" for bmap versions before 1.3, which carry no checksums
	newHash   func() hash.Hash
	ranges    []bmapRange // sorted, non-overlapping
}

// bmapXML mirrors bmaptool's format. Numbers are kept as strings because
// bmaptool pads them with spaces and we want to name a missing element.
type bmapXML struct {
	XMLName           xml.Name `xml:"bmap"`
	Version           string   `xml:"version,attr"`
	ImageSize         *string  `xml:"ImageSize"`
	BlockSize         *string  `xml:"BlockSize"`
	BlocksCount       *string  `xml:"BlocksCount"`
	MappedBlocksCount *string  `xml:"MappedBlocksCount"`
	ChecksumType      *string  `xml:"ChecksumType"`
	BmapFileChecksum  *string  `xml:"BmapFileChecksum"`
	BmapFileSHA1      *string  `xml:"BmapFileSHA1"`
	Ranges            []struct {
		Chksum *string `xml:"chksum,attr"`
		SHA1   *string `xml:"sha1,attr"`
		Text   string  `xml:",chardata"`
	} `xml:"BlockMap>Range"`
}

func hashFor(name string) (func() hash.Hash, bool) {
	switch name {
	case "sha256":
		return sha256.New, true
	case "sha512":
		return sha512.New, true
	case "sha1":
		return sha1.New, true
	case "md5":
		return md5.New, true
	}
	return nil, false
}

// readBmap reads, parses and validates a bmap file, including its own
// checksum, so that a damaged bmap is never mistaken for a sparse image.
func readBmap(path string) (*bmap, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxBmapSize+1))
	if err != nil {
		return nil, fmt.Errorf("read bmap %s: %w", path, err)
	}
	if len(raw) > maxBmapSize {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrBmap, maxBmapSize)
	}
	bm, err := parseBmap(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrBmap, err)
	}
	bm.path = path
	return bm, nil
}

func parseBmap(raw []byte) (*bmap, error) {
	var x bmapXML
	if err := xml.Unmarshal(raw, &x); err != nil {
		return nil, fmt.Errorf("not bmap XML: %w", err)
	}
	major, minor, err := parseVersion(x.Version)
	if err != nil {
		return nil, err
	}
	if major > 2 {
		return nil, fmt.Errorf("bmap version %s is newer than the supported 2.x", x.Version)
	}

	num := func(name string, s *string) (int64, error) {
		if s == nil {
			return 0, fmt.Errorf("missing <%s>", name)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(*s), 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("bad <%s> %q", name, strings.TrimSpace(*s))
		}
		return v, nil
	}
	bm := &bmap{}
	if bm.imageSize, err = num("ImageSize", x.ImageSize); err != nil {
		return nil, err
	}
	if bm.blockSize, err = num("BlockSize", x.BlockSize); err != nil {
		return nil, err
	}
	if bm.blockSize == 0 {
		return nil, errors.New("block size is 0")
	}
	blocks, err := num("BlocksCount", x.BlocksCount)
	if err != nil {
		return nil, err
	}
	if want := (bm.imageSize + bm.blockSize - 1) / bm.blockSize; blocks != want {
		return nil, fmt.Errorf("%d blocks of %d bytes do not make an image of %d bytes",
			blocks, bm.blockSize, bm.imageSize)
	}
	mapped, err := num("MappedBlocksCount", x.MappedBlocksCount)
	if err != nil {
		return nil, err
	}

	// Format 1.4 is 2.0 released under the wrong number (see bmaptool's
	// BmapCreate.py); 1.3 used SHA-1 under other element names; older
	// versions have no checksums at all.
	var fileSum *string
	rangeSum := func(i int) *string { return nil }
	switch {
	case major == 2 || (major == 1 && minor == 4):
		if x.ChecksumType == nil {
			return nil, errors.New("missing <ChecksumType>")
		}
		bm.sumType = strings.ToLower(strings.TrimSpace(*x.ChecksumType))
		fileSum = x.BmapFileChecksum
		if fileSum == nil {
			return nil, errors.New("missing <BmapFileChecksum>")
		}
		rangeSum = func(i int) *string { return x.Ranges[i].Chksum }
	case major == 1 && minor == 3:
		bm.sumType = "sha1"
		fileSum = x.BmapFileSHA1
		if fileSum == nil {
			return nil, errors.New("missing <BmapFileSHA1>")
		}
		rangeSum = func(i int) *string { return x.Ranges[i].SHA1 }
	}
	if bm.sumType != "" {
		var ok bool
		if bm.newHash, ok = hashFor(bm.sumType); !ok {
			return nil, fmt.Errorf("unsupported checksum type %q", bm.sumType)
		}
		if err := checkFileSum(raw, strings.TrimSpace(*fileSum), bm.newHash); err != nil {
			return nil, err
		}
	}
	hexLen := 0
	if bm.newHash != nil {
		hexLen = 2 * bm.newHash().Size()
	}

	var count int64
	prevLast := int64(-1)
	for i, r := range x.Ranges {
		first, last, err := parseRange(r.Text)
		if err != nil {
			return nil, err
		}
		if last >= blocks {
			return nil, fmt.Errorf("range %d-%d lies outside the image's %d blocks", first, last, blocks)
		}
		if first <= prevLast {
			return nil, fmt.Errorf("range %d-%d is not after the previous range (ends at block %d)", first, last, prevLast)
		}
		prevLast = last
		count += last - first + 1
		br := bmapRange{
			first: first,
			last:  last,
			start: first * bm.blockSize,
			end:   min((last+1)*bm.blockSize, bm.imageSize),
		}
		if s := rangeSum(i); s != nil {
			br.sum = strings.ToLower(strings.TrimSpace(*s))
			if _, err := hex.DecodeString(br.sum); err != nil || len(br.sum) != hexLen {
				return nil, fmt.Errorf("range %d-%d: bad %s checksum %q", first, last, bm.sumType, br.sum)
			}
		}
		bm.ranges = append(bm.ranges, br)
	}
	if count != mapped {
		return nil, fmt.Errorf("<MappedBlocksCount> says %d blocks, the ranges hold %d", mapped, count)
	}
	return bm, nil
}

func parseVersion(v string) (major, minor int, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(v), ".")
	if ok {
		major, err = strconv.Atoi(a)
		if err == nil {
			minor, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || major < 0 || minor < 0 {
		return 0, 0, fmt.Errorf("bad bmap version %q", v)
	}
	return major, minor, nil
}

// parseRange parses "a-b", or "a" alone as old bmap versions write single
// blocks.
func parseRange(s string) (first, last int64, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	first, err = strconv.ParseInt(strings.TrimSpace(a), 10, 64)
	last = first
	if err == nil && isRange {
		last, err = strconv.ParseInt(strings.TrimSpace(b), 10, 64)
	}
	if err != nil || first < 0 || last < first {
		return 0, 0, fmt.Errorf("bad range %q", strings.TrimSpace(s))
	}
	return first, last, nil
}

// checkFileSum checks the bmap's checksum of itself the way bmaptool computes
// it: over the whole file with the first occurrence of the checksum text
// replaced by ASCII zeros.
func checkFileSum(raw []byte, text string, newHash func() hash.Hash) error {
	if len(text) != 2*newHash().Size() {
		return fmt.Errorf("bad bmap file checksum %q", text)
	}
	pos := bytes.Index(raw, []byte(text))
	if pos < 0 {
		return fmt.Errorf("bmap file checksum %q not found in the file", text)
	}
	h := newHash()
	h.Write(raw[:pos])
	h.Write(bytes.Repeat([]byte{'0'}, len(text)))
	h.Write(raw[pos+len(text):])
	if got, want := hex.EncodeToString(h.Sum(nil)), strings.ToLower(text); got != want {
		return fmt.Errorf("bmap file checksum is %s, the file says %s (the bmap was edited or damaged)", got, want)
	}
	return nil
}

// checkSize accepts an image whose size differs from the bmap's by less than
// one block (bmaptool rounds to blocks; some tools pad the last one), and
// nothing more: a bigger difference means the bmap belongs to another image.
func (bm *bmap) checkSize(name string, size int64) error {
	d := size - bm.imageSize
	if d < 0 {
		d = -d
	}
	if d >= bm.blockSize {
		return fmt.Errorf("%s: %w: it describes a %d-byte image, %s is %d bytes",
			bm.path, ErrBmap, bm.imageSize, name, size)
	}
	return nil
}

// find returns the index of the first range that ends after off.
func (bm *bmap) find(off int64) int {
	return sort.Search(len(bm.ranges), func(i int) bool { return bm.ranges[i].end > off })
}

// mismatch builds the error for a range whose data does not match its sum.
func (bm *bmap) mismatch(name string, r bmapRange, got []byte) error {
	return fmt.Errorf("%s: %w in blocks %d-%d (bytes %d-%d): %s is %s, %s says %s",
		name, ErrBmapChecksum, r.first, r.last, r.start, r.end-1,
		bm.sumType, hex.EncodeToString(got), bm.path, r.sum)
}
