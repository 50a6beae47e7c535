// Package swarm takes an image's chunks from a BitTorrent swarm (the
// anacrolix/torrent engine) and writes them straight to their places on
// the target, and holds the server's side of it: the tracker and the web
// seed. Peers are never trusted: every piece is checked against signed
// data before it counts, and every chunk against the signed manifest's
// SHA-256 before it is written anywhere else or counted (Place.Done).
//
// The torrent of an image version is derived from its manifest alone, on
// the server and on every node, so the manifest's signature covers it and
// there is nothing more to distribute or trust:
//
//   - the torrent is a single file: the distinct non-zero chunks of the
//     image's partitions, in the order they first occur
//     (image.Manifest.TorrentChunks), each padded with zeros to the chunk
//     size, so chunk k is at k x chunk size; zero chunks are written as
//     holes by the copier and never transferred; a chunk at several
//     offsets is there once, written to all of them;
//   - with the manifest's swarm-pieces extension (image.SwarmPieces,
//     what a build gives by default), the piece length is the
//     extension's (64 KiB by default) and the piece hashes are its: the
//     first 20 bytes of each padded piece's SHA-256. A chunk is then
//     several pieces: a node passes a piece on to its peers as soon as
//     it has checked it, long before the whole chunk is in. A piece
//     wholly in a short chunk's padding is zeros, held by everyone from
//     the start. Once every piece of a chunk checked, the chunk is
//     checked whole against the manifest's SHA-256 before it counts;
//   - without it, the piece length is the chunk size, one piece per
//     chunk, and its "hash" is the first 20 bytes of the chunk's SHA-256,
//     checked over the chunk's bytes;
//   - a v1 torrent, private (BEP 27: no DHT, no PEX). BitTorrent v1 would
//     want SHA-1 piece hashes and v2 a SHA-256 Merkle root over 16 KiB
//     blocks; the engine lets a storage hash its own pieces
//     (SelfHashing): this package's storage hashes each piece with
//     SHA-256 and answers the expected value only when the signed data
//     agrees. So only imprint peers can take part, which is the point.
//
// A manifest whose extension is malformed gives no torrent (an error
// naming the extension): the swarm is not used for that image, and its
// chunks come from the sources.
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

// ErrNoPieces says an image has no non-zero chunks to share.
var ErrNoPieces = errors.New("image has no non-zero chunks")

// Torrent is the torrent of one image version.
type Torrent struct {
	Info      metainfo.Info
	InfoBytes []byte
	Hash      metainfo.Hash
	// Chunks are the torrent file's chunks (m.TorrentChunks): chunk k at
	// k x ChunkSize.
	Chunks []image.TorrentChunk
	// Index maps a chunk's SHA-256 to its place in Chunks.
	Index     map[string]int
	ChunkSize int64
	// PieceLength is the torrent's piece length: the chunk size, or the
	// swarm-pieces extension's; PerChunk pieces make a chunk, piece p is
	// of chunk p / PerChunk.
	PieceLength int64
	PerChunk    int
	// sub: the pieces are the extension's (their hashes are of the
	// padded piece); else each piece is one chunk, its hash the chunk's.
	sub bool
}

// FromManifest derives the torrent of m: the same manifest gives the same
// torrent, byte for byte, everywhere. A malformed swarm-pieces extension
// is an error (image.ErrFormat) naming it: the swarm is not for that
// image then.
func FromManifest(m *image.Manifest) (*Torrent, error) {
	if m.ChunkSize <= 0 {
		return nil, fmt.Errorf("image %s:%s: chunk size %d: %w", m.Name, m.Version, m.ChunkSize, image.ErrFormat)
	}
	chunks, err := m.TorrentChunks()
	if err != nil {
		return nil, fmt.Errorf("image %s:%s: %w", m.Name, m.Version, err)
	}
	if len(chunks) == 0 {
		return nil, fmt.Errorf("image %s:%s: %w", m.Name, m.Version, ErrNoPieces)
	}
	sp, sub, err := m.SwarmPieces()
	if err != nil {
		return nil, fmt.Errorf("image %s:%s: %w", m.Name, m.Version, err)
	}
	t := &Torrent{Chunks: chunks, Index: map[string]int{}, ChunkSize: m.ChunkSize, PieceLength: m.ChunkSize, PerChunk: 1, sub: sub}
	var hashes []byte
	for k, c := range chunks {
		t.Index[c.Sum] = k
		if !sub {
			raw, _ := hex.DecodeString(c.Sum) // checked by TorrentChunks
			hashes = append(hashes, raw[:20]...)
		}
	}
	if sub {
		t.PieceLength = sp.PieceLength
		t.PerChunk = int(m.ChunkSize / sp.PieceLength)
		hashes = sp.Hashes
	}
	private := true
	t.Info = metainfo.Info{
		PieceLength: t.PieceLength,
		Pieces:      hashes,
		// The name is advisory in BitTorrent; it keeps two versions with
		// the same chunks apart, so a swarm is one image version.
		Name:    "imprint-" + m.Name + "-" + m.Version,
		Length:  int64(len(t.Chunks)) * m.ChunkSize,
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

// NumPieces is the torrent's piece count.
func (t *Torrent) NumPieces() int { return len(t.Chunks) * t.PerChunk }

// pieceHash is the value the torrent carries for piece p.
func (t *Torrent) pieceHash(p int) (h metainfo.Hash) {
	copy(h[:], t.Info.Pieces[p*20:p*20+20])
	return h
}

// chunkOf gives piece p's chunk and its offset in the chunk.
func (t *Torrent) chunkOf(p int) (k int, off int64) {
	return p / t.PerChunk, int64(p%t.PerChunk) * t.PieceLength
}

// pieces gives the pieces of chunk k: [first, end).
func (t *Torrent) pieces(k int) (first, end int) {
	return k * t.PerChunk, (k + 1) * t.PerChunk
}

// pieceLen is how many of piece p's bytes are its chunk's; the rest, up
// to the piece length, are padding (zeros). 0: a piece wholly in the
// padding of a short chunk, complete everywhere from the start.
func (t *Torrent) pieceLen(p int) int64 {
	k, off := t.chunkOf(p)
	return max(0, min(t.PieceLength, t.Chunks[k].Length-off))
}
