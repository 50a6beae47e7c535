package swarm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/imprint-dev/imprint/image"
)

// Once the engine closes a torrent's storage (Drop), the peer reads and
// writes it has not waited for leave the target alone, so the caller can
// close it: a failed read there would crash the process (the engine
// panics on it for a closed torrent).
func TestAClosedStorageLeavesTheTargetAlone(t *testing.T) {
	_, m, want := testImage(t)
	tor, err := FromManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	var places []Place
	var files []*os.File
	for i, p := range m.Partitions {
		f, err := os.Create(filepath.Join(t.TempDir(), p.Name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(want[i], 0); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		places = append(places, Place{Content: p.Content, Target: f, Have: func(int) bool { return true }})
	}
	st, err := newPieceStore(tor, places)
	if err != nil {
		t.Fatal(err)
	}
	ti, err := st.OpenTorrent(t.Context(), &tor.Info, tor.Hash)
	if err != nil {
		t.Fatal(err)
	}
	pc := ti.Piece(tor.Info.Piece(0))
	buf := make([]byte, 16<<10)
	if _, err := pc.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	if _, err := pc.ReadAt(buf, 0); err == nil {
		t.Fatal("a read of a closed file did not fail: the test proves nothing")
	}
	if err := ti.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.ReadAt(buf, 0); err != nil {
		t.Errorf("read after the storage closed: %v", err)
	}
	if _, err := pc.WriteAt(buf, 0); err != nil {
		t.Errorf("write after the storage closed: %v", err)
	}
}

// pieceTarget is a store over empty files for m's partitions, each
// place counting its Done calls.
func pieceTarget(t *testing.T, m *image.Manifest) (*Torrent, *pieceStore, [][]int, []*os.File) {
	t.Helper()
	tor, err := FromManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	var places []Place
	var files []*os.File
	done := make([][]int, len(m.Partitions))
	for i, p := range m.Partitions {
		f, err := os.Create(filepath.Join(t.TempDir(), p.Name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		files = append(files, f)
		done[i] = make([]int, len(p.Content.Chunks))
		places = append(places, Place{Content: p.Content, Target: f, Done: func(c int) { done[i][c]++ }})
	}
	st, err := newPieceStore(tor, places)
	if err != nil {
		t.Fatal(err)
	}
	return tor, st, done, files
}

// sendPiece writes piece p of the torrent file as a peer at ip would,
// in 16 KiB blocks (flip corrupts its first byte), then checks it as the
// engine does: it counts when SelfHash gives the torrent's hash.
func sendPiece(t *testing.T, tor *Torrent, st *pieceStore, file []byte, p int, ip string, flip bool) bool {
	t.Helper()
	pc, h := writePiece(t, tor, st, file, p, ip, flip)
	if h != tor.pieceHash(p) {
		if err := pc.MarkNotComplete(); err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err := pc.MarkComplete(); err != nil {
		t.Fatal(err)
	}
	return true
}

// writePiece is sendPiece's first half: the blocks written and the
// piece hashed, not yet marked.
func writePiece(t *testing.T, tor *Torrent, st *pieceStore, file []byte, p int, ip string, flip bool) (*piece, metainfo.Hash) {
	t.Helper()
	pc := &piece{s: st, i: p}
	base := int64(p) * tor.PieceLength
	for off := int64(0); off < tor.PieceLength; off += blockSize {
		b := bytes.Clone(file[base+off : base+off+blockSize])
		if flip && off == 0 {
			b[0] ^= 1
		}
		st.blame.received(p, tor.pieceLen(p), off, b, net.ParseIP(ip))
		if _, err := pc.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	h, err := pc.SelfHash()
	if err != nil {
		t.Fatal(err)
	}
	return pc, h
}

// torrentFile is the torrent's single file: its chunks in order, each
// padded to the chunk size.
func torrentFile(tor *Torrent, m *image.Manifest, data [][]byte) []byte {
	out := make([]byte, tor.Info.Length)
	for pi, p := range m.Partitions {
		for i, sum := range p.Content.Chunks {
			if k, ok := tor.Index[sum]; ok {
				copy(out[int64(k)*tor.ChunkSize:], data[pi][int64(i)*m.ChunkSize:min(int64(i+1)*m.ChunkSize, int64(len(data[pi])))])
			}
		}
	}
	return out
}

// Pieces come in any order; a chunk counts (Done, once per place it
// occurs at) only when all its pieces checked, and is then on every
// place; a padding piece is complete from the start and reads as zeros.
func TestPiecesCompleteAChunkOnlyWhenAllChecked(t *testing.T) {
	_, m, data := testImagePieces(t, 128<<10, 32<<10)
	tor, st, done, files := pieceTarget(t, m)
	file := torrentFile(tor, m, data)
	root := m.Partitions[0].Content
	k := tor.Index[root.Chunks[2]] // also at chunk 7
	first, end := tor.pieces(k)
	order := []int{first + 3, first + 1, first + 2, first}
	for n, p := range order {
		if !sendPiece(t, tor, st, file, p, "127.0.0.2", false) {
			t.Fatalf("good piece %d did not check", p)
		}
		if n < len(order)-1 && (done[0][2] != 0 || done[0][7] != 0 || st.cs[k].done.Load()) {
			t.Fatalf("the chunk counted after %d of its %d pieces", n+1, end-first)
		}
	}
	if done[0][2] != 1 || done[0][7] != 1 {
		t.Fatalf("Done: chunk 2 %d times, chunk 7 %d times; want once each", done[0][2], done[0][7])
	}
	for _, at := range []int64{2, 7} {
		got := make([]byte, testChunkLen(root, int(at), m.ChunkSize))
		if _, err := files[0].ReadAt(got, at*m.ChunkSize); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[0][at*m.ChunkSize:(at+1)*m.ChunkSize]) {
			t.Errorf("chunk %d: not the chunk's bytes", at)
		}
	}
	// The short last chunk of the root (5120 bytes): pieces 1-3 of it are
	// padding, complete at once; its first is not.
	short := tor.Index[root.Chunks[20]]
	first, end = tor.pieces(short)
	if st.ps[first].complete.Load() {
		t.Error("the short chunk's data piece is complete before it came")
	}
	for p := first + 1; p < end; p++ {
		pc := &piece{s: st, i: p}
		if !pc.Completion().Complete {
			t.Errorf("padding piece %d is not complete from the start", p-first)
		}
		b := bytes.Repeat([]byte{1}, blockSize)
		if _, err := pc.ReadAt(b, 0); err != nil || !image.IsZero(b) {
			t.Errorf("padding piece %d reads %v, not zeros", p-first, err)
		}
	}
	if !sendPiece(t, tor, st, file, first, "127.0.0.2", false) || done[0][20] != 1 {
		t.Fatalf("the short chunk's one data piece did not complete it (Done %d)", done[0][20])
	}
}

func testChunkLen(c *image.Content, i int, cs int64) int64 { return c.ChunkLen(i, cs) }

// A piece with a corrupt block does not check; once it comes good from
// another peer, the sender of the bad block is banned, the honest one
// not.
func TestACorruptPieceIsRefusedAndItsSenderBlamed(t *testing.T) {
	_, m, data := testImagePieces(t, 128<<10, 32<<10)
	tor, st, done, _ := pieceTarget(t, m)
	var banned []string
	st.blame.ban = func(ips ...net.IP) {
		for _, ip := range ips {
			banned = append(banned, ip.String())
		}
	}
	file := torrentFile(tor, m, data)
	k := tor.Index[m.Partitions[1].Content.Chunks[0]]
	first, end := tor.pieces(k)
	for p := first + 1; p < end; p++ {
		if !sendPiece(t, tor, st, file, p, "127.0.0.2", false) {
			t.Fatal("a good piece did not check")
		}
	}
	if sendPiece(t, tor, st, file, first, "127.0.0.9", true) {
		t.Fatal("a corrupt piece checked")
	}
	if st.failed.Load() != 1 || done[1][0] != 0 || st.cs[k].done.Load() {
		t.Fatalf("after a corrupt piece: %d failed, Done %d", st.failed.Load(), done[1][0])
	}
	if !sendPiece(t, tor, st, file, first, "127.0.0.3", false) {
		t.Fatal("the good copy did not check")
	}
	if done[1][0] != 1 {
		t.Fatalf("Done %d times, want once", done[1][0])
	}
	if len(banned) != 1 || banned[0] != "127.0.0.9" {
		t.Fatalf("banned %v, want 127.0.0.9 only", banned)
	}
}

// Pieces that check against the extension's hashes but make a chunk
// that does not hash to the manifest's SHA-256 (the extension's hashes
// are of other bytes) never count: every piece of the chunk is taken
// again, the engine told.
func TestAChunkWhosePiecesCheckButNotTheWholeIsTakenAgain(t *testing.T) {
	m, other := badWholeImage(t)
	tor, st, done, _ := pieceTarget(t, m)
	var again []int
	st.recheck = func(p []int) { again = append(again, p...) }
	file := torrentFile(tor, m, other)
	k := tor.Index[m.Partitions[0].Content.Chunks[2]]
	first, end := tor.pieces(k)
	for p := first; p < end-1; p++ {
		if !sendPiece(t, tor, st, file, p, "127.0.0.2", false) {
			t.Fatal("a piece matching the extension did not check")
		}
	}
	if sendPiece(t, tor, st, file, end-1, "127.0.0.2", false) {
		t.Fatal("the piece that completes a bad chunk checked")
	}
	if done[0][2] != 0 || done[0][7] != 0 || st.cs[k].done.Load() {
		t.Fatal("a chunk that does not match the manifest counted")
	}
	if len(again) != end-first-1 {
		t.Fatalf("the engine was told of %v, want the chunk's other %d pieces", again, end-first-1)
	}
	for p := first; p < end; p++ {
		if st.ps[p].complete.Load() || st.ps[p].good.Load() {
			t.Errorf("piece %d still counts", p-first)
		}
	}
	if st.failed.Load() == 0 {
		t.Error("the failure was not counted")
	}
}

// A piece that hashed good while another piece of its chunk completed
// the chunk, which did not check whole, waits for that check: when it
// gets its turn it no longer counts (the check cleared it), so the
// engine takes it again; counted good, it would never be fetched again
// and the chunk never finish.
func TestAPieceClearedByItsChunksFailedCheckDoesNotCount(t *testing.T) {
	m, other := badWholeImage(t)
	tor, st, _, _ := pieceTarget(t, m)
	file := torrentFile(tor, m, other)
	k := tor.Index[m.Partitions[0].Content.Chunks[2]]
	first, end := tor.pieces(k)
	for p := first + 1; p < end-1; p++ {
		if !sendPiece(t, tor, st, file, p, "127.0.0.2", false) {
			t.Fatal("a piece matching the extension did not check")
		}
	}
	// Piece first hashed good (SelfHash sets good before it waits on
	// the chunk)...
	st.ps[first].good.Store(true)
	// ...while the last piece again completed the chunk, which fails
	// whole and clears every piece of it.
	if sendPiece(t, tor, st, file, end-1, "127.0.0.2", false) {
		t.Fatal("the piece that completes a bad chunk checked")
	}
	ok, err := st.checkChunk(k, first, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Error("a piece cleared by its chunk's failed check still counts")
	}
}

// badWholeImage is an image whose extension's hashes are those of other
// bytes than the manifest's for root chunk 2 (and 7, the same chunk),
// in its second 32 KiB piece: every piece checks, the whole does not.
// other is the bytes the hashes are of.
func badWholeImage(t *testing.T) (*image.Manifest, [][]byte) {
	t.Helper()
	_, m, data := testImagePieces(t, 128<<10, 32<<10)
	other := [][]byte{bytes.Clone(data[0]), data[1]}
	other[0][2*m.ChunkSize+40000] ^= 1 // chunk 2, its second piece
	other[0][7*m.ChunkSize+40000] ^= 1 // and where it occurs again
	// image.PieceHashes refuses such bytes: hashed here.
	chunks, err := m.TorrentChunks()
	if err != nil {
		t.Fatal(err)
	}
	var hashes []byte
	for _, c := range chunks {
		buf := make([]byte, m.ChunkSize)
		copy(buf, other[c.Partition][int64(c.Chunk)*m.ChunkSize:min(int64(c.Chunk+1)*m.ChunkSize, int64(len(other[c.Partition])))])
		for off := int64(0); off < m.ChunkSize; off += 32 << 10 {
			s := sha256.Sum256(buf[off : off+32<<10])
			hashes = append(hashes, s[:20]...)
		}
	}
	if err := m.SetSwarmPieces(&image.SwarmPieces{PieceLength: 32 << 10, Hashes: hashes}); err != nil {
		t.Fatal(err)
	}
	return m, other
}

// Without the extension a piece is a chunk (the old torrents): one
// write of it, checked against the manifest's SHA-256, makes it count.
func TestWithoutTheExtensionAPieceIsAChunk(t *testing.T) {
	_, m, data := testImagePieces(t, 64<<10, -1)
	tor, st, done, _ := pieceTarget(t, m)
	if tor.PerChunk != 1 || tor.PieceLength != m.ChunkSize {
		t.Fatalf("%d pieces per chunk of %d", tor.PerChunk, tor.PieceLength)
	}
	file := torrentFile(tor, m, data)
	k := tor.Index[m.Partitions[0].Content.Chunks[2]]
	if sendPiece(t, tor, st, file, k, "127.0.0.9", true) || done[0][2] != 0 {
		t.Fatal("a corrupt chunk counted")
	}
	if !sendPiece(t, tor, st, file, k, "127.0.0.2", false) || done[0][2] != 1 || done[0][7] != 1 {
		t.Fatalf("a good chunk: Done %d, %d", done[0][2], done[0][7])
	}
}

// A chunk that occurs twice (root chunks 2 and 7), journaled written at
// one place (Have) but not the other, as after an interrupted deploy:
// when the journal is right, the chunk is copied from where it is and
// nothing a peer sends lands on it; when the journal is wrong (the
// bytes there do not check), the chunk is fetched into the place that
// lacks it, then copied over the bad one. Either way Done is called
// only for the place that did not have it.
func TestAChunkHeldAtSomeOfItsPlacesIsNotOverwrittenByPeers(t *testing.T) {
	for _, piece := range []int64{32 << 10, -1} {
		for _, tc := range []struct{ journalRight, withCopied bool }{{true, false}, {false, false}, {true, true}, {false, true}} {
			journalRight := tc.journalRight
			_, m, data := testImagePieces(t, 128<<10, piece)
			tor, err := FromManifest(m)
			if err != nil {
				t.Fatal(err)
			}
			cs := m.ChunkSize
			chunk := func(pi int, i int64) []byte { return data[pi][i*cs : (i+1)*cs] }
			var places []Place
			var files []*os.File
			done := make([][]int, len(m.Partitions))
			copied := make([][]int, len(m.Partitions))
			for i, p := range m.Partitions {
				f, err := os.Create(filepath.Join(t.TempDir(), p.Name))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				on := bytes.Clone(data[i])
				if i == 0 {
					clear(on[7*cs : 8*cs]) // not written yet
					if !journalRight {
						on[2*cs+100] ^= 1 // written, but not these bytes
					}
				}
				if _, err := f.WriteAt(on, 0); err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
				done[i] = make([]int, len(p.Content.Chunks))
				copied[i] = make([]int, len(p.Content.Chunks))
				root := i == 0
				pl := Place{Content: p.Content, Target: f,
					Have: func(c int) bool { return !root || c != 7 },
					Done: func(c int) { done[i][c]++ }}
				if tc.withCopied {
					pl.Copied = func(c int) { copied[i][c]++ }
				}
				places = append(places, pl)
			}
			st, err := newPieceStore(tor, places)
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("piece %d, journal right %v, Copied set %v", piece, journalRight, tc.withCopied)
			k := tor.Index[m.Partitions[0].Content.Chunks[2]]
			if st.cs[k].done.Load() != journalRight {
				t.Errorf("%s: chunk done at start: %v", name, st.cs[k].done.Load())
			}
			file := torrentFile(tor, m, data)
			first, end := tor.pieces(k)
			sendPiece(t, tor, st, file, first, "127.0.0.9", true) // a bad peer's piece
			got := make([]byte, cs)
			if _, err := files[0].ReadAt(got, 2*cs); err != nil {
				t.Fatal(err)
			}
			if journalRight && !bytes.Equal(got, chunk(0, 2)) {
				t.Errorf("%s: root chunk 2, held, now holds a peer's unchecked bytes", name)
			}
			for p := first; p < end; p++ {
				if !sendPiece(t, tor, st, file, p, "127.0.0.2", false) {
					t.Fatalf("%s: good piece %d did not check", name, p-first)
				}
			}
			for _, at := range []int64{2, 7} {
				got := make([]byte, cs)
				if _, err := files[0].ReadAt(got, at*cs); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, chunk(0, at)) {
					t.Errorf("%s: root chunk %d does not hold the chunk's bytes", name, at)
				}
			}
			// Chunk 7 is copied from chunk 2 when the journal was right
			// (Copied says so when set), fetched from peers when not.
			wantDone, wantCopied := 1, 0
			if journalRight && tc.withCopied {
				wantDone, wantCopied = 0, 1
			}
			if done[0][7] != wantDone || copied[0][7] != wantCopied || done[0][2] != 0 || copied[0][2] != 0 {
				t.Errorf("%s: chunk 7 Done %d, Copied %d times (want %d, %d); chunk 2 (had it) Done %d, Copied %d (want 0, 0)",
					name, done[0][7], copied[0][7], wantDone, wantCopied, done[0][2], copied[0][2])
			}
			for i, c := range done[1] {
				if c != 0 {
					t.Errorf("%s: Done for data chunk %d, held from the start", name, i)
				}
			}
		}
	}
}

// failReadAt fails reads that touch [from, to): one bad region of a disk.
type failReadAt struct {
	*os.File
	from, to int64
}

func (f failReadAt) ReadAt(b []byte, off int64) (int, error) {
	if off < f.to && off+int64(len(b)) > f.from {
		return 0, errors.New("input/output error")
	}
	return f.File.ReadAt(b, off)
}

// A place that says it holds a chunk but cannot be read is taken as
// wrong, not as a reason to leave the swarm: the chunk is fetched, with
// its first place one that lacked it.
func TestAnUnreadableHeldChunkIsFetchedNotFatal(t *testing.T) {
	_, m, data := testImagePieces(t, 128<<10, 32<<10)
	tor, err := FromManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	cs := m.ChunkSize
	var places []Place
	for i, p := range m.Partitions {
		f, err := os.Create(filepath.Join(t.TempDir(), p.Name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if _, err := f.WriteAt(data[i], 0); err != nil {
			t.Fatal(err)
		}
		root := i == 0
		var target Target = f
		if root {
			target = failReadAt{f, 2 * cs, 3 * cs} // chunk 2 unreadable
		}
		places = append(places, Place{Content: p.Content, Target: target, Have: func(c int) bool { return !root || c != 7 }})
	}
	st, err := newPieceStore(tor, places)
	if err != nil {
		t.Fatalf("an unreadable held chunk made the store fail: %v", err)
	}
	k := tor.Index[m.Partitions[0].Content.Chunks[2]]
	if st.cs[k].done.Load() {
		t.Error("chunk done although its holder could not be read")
	}
	if l := st.cs[k].locs[0]; l.had {
		t.Errorf("first place of the chunk (place %d chunk %d) is one that held it: peers' bytes would land there", l.place, l.chunk)
	}
	if n := st.heldWrong.Load(); n != 1 {
		t.Errorf("heldWrong = %d, want 1", n)
	}
}

// A piece that passed, whose chunk then failed its whole check before the
// engine marked the piece complete, must not end up complete: the engine
// would never fetch it again and the chunk would never finish.
func TestAPieceClearedBeforeMarkCompleteStaysIncomplete(t *testing.T) {
	m, other := badWholeImage(t)
	tor, st, _, _ := pieceTarget(t, m)
	var told []int
	st.recheck = func(p []int) { told = append(told, p...) }
	file := torrentFile(tor, m, other)
	k := tor.Index[m.Partitions[0].Content.Chunks[2]]
	first, end := tor.pieces(k)
	for p := first + 1; p < end-1; p++ {
		if !sendPiece(t, tor, st, file, p, "127.0.0.2", false) {
			t.Fatal("piece did not check")
		}
	}
	// The first piece passes its own hash; before the engine marks it
	// complete, the chunk's last piece completes it and the whole fails.
	pc, h := writePiece(t, tor, st, file, first, "127.0.0.2", false)
	if h != tor.pieceHash(first) {
		t.Fatal("first piece did not pass")
	}
	if sendPiece(t, tor, st, file, end-1, "127.0.0.2", false) {
		t.Fatal("a chunk whose whole does not match checked")
	}
	if err := pc.MarkComplete(); err != nil {
		t.Fatal(err)
	}
	if st.ps[first].complete.Load() {
		t.Error("piece complete although its chunk failed the whole check: never fetched again")
	}
	if !slices.Contains(told, first) {
		t.Errorf("engine not told again about piece %d (told %v)", first, told)
	}
}
