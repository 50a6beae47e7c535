// Package swarm takes an image's chunks from a BitTorrent swarm (the
// anacrolix/torrent engine) and writes them straight to their places on
// the target, and holds the server's side of it: the tracker and the web
// seed. Peers are never trusted: every piece is one chunk, checked
// against the signed manifest's SHA-256 before it counts.
//
// The torrent of an image version is derived from its manifest alone, on
// the server and on every node, so the manifest's signature covers it and
// there is nothing more to distribute or trust:
//
//   - one piece per distinct non-zero chunk of the image's partitions, in
//     the order the chunks first occur; zero chunks are written as holes
//     by the copier and never transferred; a chunk at several offsets is
//     one piece, written to all of them;
//   - piece length = the manifest's chunk size; a short chunk (the last of
//     a content) is padded with zeros to the piece length, so every piece
//     is exactly one chunk and the torrent is a single file of
//     pieces x chunk size bytes;
//   - a v1 torrent, private (BEP 27: no DHT, no PEX), whose "piece hash"
//     is the first 20 bytes of the chunk's SHA-256. BitTorrent v1 would
//     want the SHA-1 and v2 a SHA-256 Merkle root over 16 KiB blocks of
//     the piece; neither can be computed from the manifest without the
//     data. The engine lets a storage hash its own pieces (SelfHashing):
//     this package's storage hashes each piece with SHA-256 over the
//     chunk's bytes and answers the expected value only when the manifest
//     agrees. So only imprint peers can take part, which is the point.
//
// Boot files and loaders (small, fetched into memory) stay on HTTP.
package swarm

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/imprint-dev/imprint/image"
)

// ErrNoPieces says an image has no non-zero chunk to share.
var ErrNoPieces = errors.New("image has no non-zero chunks")

// Piece is one distinct non-zero chunk of an image.
type Piece struct {
	Sum    string // hex SHA-256
	Length int64  // uncompressed length, at most the chunk size
}

// Torrent is the torrent of one image version.
type Torrent struct {
	Info      metainfo.Info
	InfoBytes []byte
	Hash      metainfo.Hash
	Pieces    []Piece
	// Index maps a chunk's SHA-256 to its piece.
	Index     map[string]int
	ChunkSize int64
}

// FromManifest derives the torrent of m: the same manifest gives the same
// torrent, byte for byte, everywhere.
func FromManifest(m *image.Manifest) (*Torrent, error) {
	if m.ChunkSize <= 0 {
		return nil, fmt.Errorf("image %s:%s: chunk size %d: %w", m.Name, m.Version, m.ChunkSize, image.ErrFormat)
	}
	t := &Torrent{Index: map[string]int{}, ChunkSize: m.ChunkSize}
	var hashes []byte
	for _, p := range m.Partitions {
		c := p.Content
		if c == nil {
			continue
		}
		for i, sum := range c.Chunks {
			if sum == image.ZeroChunk {
				continue
			}
			if _, ok := t.Index[sum]; ok {
				continue
			}
			raw, err := hex.DecodeString(sum)
			if err != nil || len(raw) != 32 {
				return nil, fmt.Errorf("partition %s chunk %d: %q is not a SHA-256: %w", p.Name, i, sum, image.ErrFormat)
			}
			t.Index[sum] = len(t.Pieces)
			t.Pieces = append(t.Pieces, Piece{Sum: sum, Length: c.ChunkLen(i, m.ChunkSize)})
			hashes = append(hashes, raw[:20]...)
		}
	}
	if len(t.Pieces) == 0 {
		return nil, fmt.Errorf("image %s:%s: %w", m.Name, m.Version, ErrNoPieces)
	}
	private := true
	t.Info = metainfo.Info{
		PieceLength: m.ChunkSize,
		Pieces:      hashes,
		// The name is advisory in BitTorrent; it keeps two versions with
		// the same chunks apart, so a swarm is one image version.
		Name:    "imprint-" + m.Name + "-" + m.Version,
		Length:  int64(len(t.Pieces)) * m.ChunkSize,
		Private: &private,
	}
	b, err := bencode.Marshal(t.Info)
	if err != nil {
		return nil, fmt.Errorf("image %s:%s: torrent info: %w", m.Name, m.Version, err)
	}
	t.InfoBytes = b
	t.Hash = metainfo.Hash(sha1.Sum(b))
	return t, nil
}

// pieceHash is the value the torrent carries for piece p.
func (t *Torrent) pieceHash(p int) (h metainfo.Hash) {
	copy(h[:], t.Info.Pieces[p*20:p*20+20])
	return h
}
