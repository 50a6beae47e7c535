package image

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// SwarmPiecesExtension names the manifest extension that gives the swarm
// pieces smaller than a chunk: {"piece_length": N, "hashes": BASE64}.
// The swarm's torrent file is the image's distinct non-zero chunks
// (TorrentChunks), each padded with zeros to the chunk size; hashes is
// the first 20 bytes of the SHA-256 of each piece_length piece of it, in
// order. It is in the manifest so that the signature covers it: a node
// derives its torrent from signed data alone. An older reader skips it
// (its pieces are then the chunks).
const SwarmPiecesExtension = "imprint.swarm-pieces"

// MinPieceLength is the smallest swarm piece: the block size BitTorrent
// peers request in.
const MinPieceLength = 16 << 10

// DefaultPieceLength is the swarm piece length a build gives an image
// whose chunks are larger: at 20 Mbit/s, a node passes a piece on to its
// peers in 26 ms rather than 0.4 s for a 1 MiB chunk.
const DefaultPieceLength = 64 << 10

// MaxSwarmPieces caps the pieces of an image's torrent with the
// extension: 1.3 MB of hashes (1.75 MB in the manifest's base64). Each
// MiB of distinct data at 64 KiB pieces adds ~430 bytes to the manifest,
// which a client fetches whole (and at most 64 MiB of), and the swarm
// engine's work grows with the number of pieces: a larger image gets
// larger pieces (ChoosePieceLength).
const MaxSwarmPieces = 1 << 16

// ChoosePieceLength is the piece length for an image of distinctChunks
// distinct non-zero chunks of chunkSize bytes when want is asked for:
// want, doubled until the torrent has at most MaxSwarmPieces pieces. 0
// is no extension (the pieces are the chunks): want, or what it was
// raised to, is at least the chunk size.
func ChoosePieceLength(distinctChunks int, chunkSize, want int64) int64 {
	n := want
	for n > 0 && n < chunkSize && int64(distinctChunks)*(chunkSize/n) > MaxSwarmPieces {
		n *= 2
	}
	if n <= 0 || n >= chunkSize {
		return 0
	}
	return n
}

// PieceHashLen is the length of one piece's hash in SwarmPieces.Hashes.
const PieceHashLen = 20

// SwarmPieces is the swarm-pieces extension.
type SwarmPieces struct {
	PieceLength int64
	// Hashes holds PieceHashLen bytes per piece.
	Hashes []byte
}

type swarmPiecesJSON struct {
	PieceLength int64  `json:"piece_length"`
	Hashes      string `json:"hashes"`
}

// TorrentChunk is one distinct non-zero chunk of an image's partitions.
type TorrentChunk struct {
	Sum    string // hex SHA-256
	Length int64  // uncompressed length, at most the chunk size
	// Partition and Chunk are where it first occurs: m.Partitions[Partition]
	// .Content.Chunks[Chunk].
	Partition, Chunk int
}

// TorrentChunks lists the distinct non-zero chunks of m's partitions in
// the order they first occur: the chunks of the image's swarm torrent.
// A chunk sum that is not a SHA-256 is an error.
func (m *Manifest) TorrentChunks() ([]TorrentChunk, error) {
	var out []TorrentChunk
	seen := map[string]bool{}
	for pi, p := range m.Partitions {
		c := p.Content
		if c == nil {
			continue
		}
		for i, sum := range c.Chunks {
			if sum == ZeroChunk || seen[sum] {
				continue
			}
			if raw, err := hex.DecodeString(sum); err != nil || len(raw) != sha256.Size {
				return nil, fmt.Errorf("partition %s chunk %d: %q is not a SHA-256: %w", p.Name, i, sum, ErrFormat)
			}
			seen[sum] = true
			out = append(out, TorrentChunk{Sum: sum, Length: c.ChunkLen(i, m.ChunkSize), Partition: pi, Chunk: i})
		}
	}
	return out, nil
}

// checkPieceLength says whether n is a piece length for chunks of
// chunkSize bytes.
func checkPieceLength(n, chunkSize int64) error {
	switch {
	case n < MinPieceLength:
		return fmt.Errorf("piece length %d is below %d", n, MinPieceLength)
	case n&(n-1) != 0:
		return fmt.Errorf("piece length %d is not a power of two", n)
	case n >= chunkSize:
		return fmt.Errorf("piece length %d is not below the chunk size %d", n, chunkSize)
	case chunkSize%n != 0:
		// Validate says the chunk size is a power of two, but not every
		// reader validates (the agent's on-demand swarm).
		return fmt.Errorf("piece length %d does not divide the chunk size %d", n, chunkSize)
	}
	return nil
}

// SwarmPieces gives m's swarm-pieces extension: false when it has none;
// an error (ErrFormat) naming the extension when it is malformed or does
// not fit m's chunks.
func (m *Manifest) SwarmPieces() (*SwarmPieces, bool, error) {
	raw, ok := m.Extensions[SwarmPiecesExtension]
	if !ok {
		return nil, false, nil
	}
	bad := func(format string, a ...any) (*SwarmPieces, bool, error) {
		return nil, true, fmt.Errorf("%w: extension %s: %s", ErrFormat, SwarmPiecesExtension, fmt.Sprintf(format, a...))
	}
	var j swarmPiecesJSON
	if err := strictDecode(raw, &j); err != nil {
		return bad("%v", err)
	}
	if err := checkPieceLength(j.PieceLength, m.ChunkSize); err != nil {
		return bad("%v", err)
	}
	h, err := base64.StdEncoding.DecodeString(j.Hashes)
	if err != nil {
		return bad("hashes are not base64: %v", err)
	}
	chunks, err := m.TorrentChunks()
	if err != nil {
		return bad("%v", err)
	}
	// Compared by division: a signed but absurd chunk size must not wrap
	// the product around to a count that passes.
	if per := m.ChunkSize / j.PieceLength; per > MaxSwarmPieces || int64(len(chunks)) > MaxSwarmPieces/per {
		return bad("%d chunks of %d pieces, more than %d pieces", len(chunks), per, MaxSwarmPieces)
	}
	want := int64(len(chunks)) * (m.ChunkSize / j.PieceLength) * PieceHashLen
	if int64(len(h)) != want {
		return bad("%d bytes of hashes, want %d (%d chunks of %d pieces)", len(h), want, len(chunks), m.ChunkSize/j.PieceLength)
	}
	return &SwarmPieces{PieceLength: j.PieceLength, Hashes: h}, true, nil
}

// SetSwarmPieces puts sp in m's extensions, keeping the others.
func (m *Manifest) SetSwarmPieces(sp *SwarmPieces) error {
	b, err := json.Marshal(swarmPiecesJSON{PieceLength: sp.PieceLength, Hashes: base64.StdEncoding.EncodeToString(sp.Hashes)})
	if err != nil {
		return err
	}
	m.SetExtension(SwarmPiecesExtension, b)
	return nil
}

// SetExtension sets one extension of m, keeping the others.
func (m *Manifest) SetExtension(name string, v json.RawMessage) {
	if m.Extensions == nil {
		m.Extensions = map[string]json.RawMessage{}
	}
	m.Extensions[name] = v
}

// PieceHashes computes the swarm-pieces hashes of m's chunks for pieces
// of pieceLength bytes. read fills buf (the chunk's length) with the
// bytes of chunk chunk of partition partition; each is checked against
// its SHA-256 before it is hashed, so the hashes agree with the chunks.
// Chunks are read and hashed on every CPU at once (a build pays this
// pass on top of storing the chunks), so read is called from several
// goroutines; of several failing chunks, the first in order is named.
func PieceHashes(m *Manifest, pieceLength int64, read func(partition, chunk int, buf []byte) error) ([]byte, error) {
	if err := checkPieceLength(pieceLength, m.ChunkSize); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	chunks, err := m.TorrentChunks()
	if err != nil {
		return nil, err
	}
	per := m.ChunkSize / pieceLength
	each := int(per) * PieceHashLen
	out := make([]byte, len(chunks)*each)
	var (
		next     atomic.Int64
		mu       sync.Mutex
		firstBad = len(chunks)
		badErr   error
		wg       sync.WaitGroup
	)
	fail := func(i int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if i < firstBad {
			firstBad, badErr = i, err
		}
	}
	failed := func(i int) bool {
		mu.Lock()
		defer mu.Unlock()
		return firstBad < i
	}
	for range min(runtime.GOMAXPROCS(0), max(len(chunks), 1)) {
		wg.Go(func() {
			buf := make([]byte, m.ChunkSize)
			for {
				i := int(next.Add(1) - 1)
				// Past the last chunk, or past one that failed already: a
				// later error would not be the one reported.
				if i >= len(chunks) || failed(i) {
					return
				}
				c := chunks[i]
				clear(buf)
				if err := read(c.Partition, c.Chunk, buf[:c.Length]); err != nil {
					fail(i, fmt.Errorf("partition %s chunk %d: %w", m.Partitions[c.Partition].Name, c.Chunk, err))
					continue
				}
				if got := HashBytes(buf[:c.Length]); got != c.Sum {
					fail(i, fmt.Errorf("partition %s chunk %d: read %s, the manifest says %s", m.Partitions[c.Partition].Name, c.Chunk, got, c.Sum))
					continue
				}
				dst := out[i*each : (i+1)*each]
				for k := int64(0); k < per; k++ {
					s := sha256.Sum256(buf[k*pieceLength : (k+1)*pieceLength])
					copy(dst[k*PieceHashLen:], s[:PieceHashLen])
				}
			}
		})
	}
	wg.Wait()
	if badErr != nil {
		return nil, badErr
	}
	return out, nil
}
