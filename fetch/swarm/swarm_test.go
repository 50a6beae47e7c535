package swarm

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/torrent/tracker"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

const testChunk = 128 << 10

// testImage stores an image of two partitions in a new store: random
// chunks, a chunk that occurs twice, zero chunks, a short last chunk.
func testImage(t *testing.T) (*store.Dir, *image.Manifest, [][]byte) {
	t.Helper()
	return testImageChunk(t, testChunk)
}

// testImageChunk is testImage at another chunk size, with the swarm
// pieces a build gives it by default.
func testImageChunk(t *testing.T, testChunk int64) (*store.Dir, *image.Manifest, [][]byte) {
	t.Helper()
	return testImagePieces(t, testChunk, 0)
}

// withPieces gives m the swarm-pieces extension for pieces of piece
// bytes, of the partitions' data; 0 is what a build does by default
// (64 KiB pieces below larger chunks), negative is none.
func withPieces(t testing.TB, m *image.Manifest, data [][]byte, piece int64) {
	t.Helper()
	if piece == 0 && m.ChunkSize > image.DefaultPieceLength {
		piece = image.DefaultPieceLength
	}
	if piece <= 0 || piece >= m.ChunkSize {
		return
	}
	h, err := image.PieceHashes(m, piece, func(p, c int, buf []byte) error {
		copy(buf, data[p][int64(c)*m.ChunkSize:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetSwarmPieces(&image.SwarmPieces{PieceLength: piece, Hashes: h}); err != nil {
		t.Fatal(err)
	}
}

// testImagePieces is testImageChunk with swarm pieces of piece bytes (as
// withPieces).
func testImagePieces(t *testing.T, testChunk, piece int64) (*store.Dir, *image.Manifest, [][]byte) {
	t.Helper()
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root := make([]byte, 20*testChunk+5120)
	rand.Read(root)
	copy(root[7*testChunk:8*testChunk], root[2*testChunk:3*testChunk]) // the same chunk twice
	clear(root[10*testChunk : 13*testChunk])                           // zero chunks
	data := make([]byte, 6*testChunk)
	rand.Read(data)
	var parts []image.Partition
	for i, b := range [][]byte{root, data} {
		c, _, err := image.StoreContent(t.Context(), st, bytes.NewReader(b), int64(len(b)), testChunk, nil)
		if err != nil {
			t.Fatal(err)
		}
		name, typ := "root", layout.TypeRootX86_64
		if i == 1 {
			name, typ = "data", layout.TypeLinuxGeneric
		}
		parts = append(parts, image.Partition{Name: name, Type: typ, Content: c})
	}
	m := &image.Manifest{Format: image.FormatVersion, Name: "demo", Version: "1", Created: time.Unix(1700000000, 0).UTC(),
		ChunkSize: testChunk, Partitions: parts}
	withPieces(t, m, [][]byte{root, data}, piece)
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	return st, m, [][]byte{root, data}
}

func TestSameManifestSameInfohash(t *testing.T) {
	_, m, _ := testImage(t)
	a, err := FromManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := image.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := FromManifest(m2)
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash != b.Hash || !bytes.Equal(a.InfoBytes, b.InfoBytes) {
		t.Fatalf("same manifest, different torrents: %s vs %s", a.Hash, b.Hash)
	}
	// 21 root chunks minus 3 zero and 1 repeated, plus 6 data chunks.
	if len(a.Chunks) != 17+6 {
		t.Fatalf("%d pieces, want 23 (zero chunks out, a repeated chunk once)", len(a.Chunks))
	}
	m2.Version = "2"
	c, err := FromManifest(m2)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hash == a.Hash {
		t.Fatal("another version gave the same infohash")
	}
	m2.Partitions[0].Content.Chunks[0] = m2.Partitions[0].Content.Chunks[1]
	// The piece hashes were of the other chunks.
	if _, err := FromManifest(m2); !errors.Is(err, image.ErrFormat) || !strings.Contains(err.Error(), image.SwarmPiecesExtension) {
		t.Fatalf("piece hashes of other chunks: %v, want an error naming %s", err, image.SwarmPiecesExtension)
	}
	delete(m2.Extensions, image.SwarmPiecesExtension)
	d, err := FromManifest(m2)
	if err != nil {
		t.Fatal(err)
	}
	if d.Hash == c.Hash {
		t.Fatal("other chunks gave the same infohash")
	}
}

// With the swarm-pieces extension, the torrent's pieces are the
// extension's: a chunk is PerChunk pieces, the file layout is the same
// (chunk k at k x chunk size), the short chunk's padding pieces are
// there, and the torrent differs from the one without it.
func TestSwarmPiecesMakeTheTorrentsPieces(t *testing.T) {
	_, m, _ := testImagePieces(t, 256<<10, 32<<10)
	a, err := FromManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	if a.PieceLength != 32<<10 || a.PerChunk != 8 || a.Info.PieceLength != 32<<10 {
		t.Fatalf("piece length %d, %d per chunk", a.PieceLength, a.PerChunk)
	}
	if got, want := a.Info.NumPieces(), len(a.Chunks)*8; got != want || a.NumPieces() != want {
		t.Fatalf("%d pieces, want %d", got, want)
	}
	if a.Info.Length != int64(len(a.Chunks))*m.ChunkSize {
		t.Fatalf("length %d: the web seed's layout moved", a.Info.Length)
	}
	// The short chunk (5120 bytes, the last of the root) has one piece
	// of data and seven of padding.
	k := a.Index[m.Partitions[0].Content.Chunks[20]]
	first, end := a.pieces(k)
	if l := a.pieceLen(first); l != 5120 {
		t.Errorf("the short chunk's first piece holds %d bytes, want 5120", l)
	}
	for p := first + 1; p < end; p++ {
		if a.pieceLen(p) != 0 {
			t.Errorf("piece %d of the short chunk holds %d bytes, want none", p-first, a.pieceLen(p))
		}
	}
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := image.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := FromManifest(m2)
	if err != nil {
		t.Fatal(err)
	}
	if b.Hash != a.Hash {
		t.Fatal("the same manifest gave another torrent")
	}
	delete(m2.Extensions, image.SwarmPiecesExtension)
	c, err := FromManifest(m2)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hash == a.Hash || c.PerChunk != 1 || c.PieceLength != m.ChunkSize {
		t.Fatalf("without the extension: %s, %d per chunk, pieces of %d", c.Hash, c.PerChunk, c.PieceLength)
	}
}

func TestNotAHashIsRefused(t *testing.T) {
	_, m, _ := testImage(t)
	m.Partitions[0].Content.Chunks[0] = "nothex"
	if _, err := FromManifest(m); err == nil {
		t.Fatal("a chunk name that is not a SHA-256 was accepted")
	}
}

// server is an imprint server's swarm routes over a store; the web seed
// can be switched off.
type server struct {
	*httptest.Server
	seedOff atomic.Bool
	tracker *Tracker

	mu     sync.Mutex
	ranges []string // every web seed request's Range header, in order
}

// rangeLens gives the length of every web seed request's range; a
// request without one (the whole file) is -1.
func (s *server) rangeLens(t testing.TB) []int64 {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for _, h := range s.ranges {
		var a, b int64
		if _, err := fmt.Sscanf(h, "bytes=%d-%d", &a, &b); err != nil {
			out = append(out, -1)
			continue
		}
		out = append(out, b-a+1)
	}
	return out
}

func newServer(t testing.TB, st store.Source) *server {
	s := &server{}
	s.Server = httptest.NewServer(s.handler(t, st))
	t.Cleanup(s.Close)
	return s
}

// handler is a fresh tracker and web seed over st.
func (s *server) handler(t testing.TB, st store.Source) http.Handler {
	s.tracker = &Tracker{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Interval: time.Second}
	ws := &WebSeed{Src: st}
	t.Cleanup(ws.Close)
	mux := http.NewServeMux()
	mux.Handle("/swarm/announce", s.tracker)
	mux.Handle("/swarm/data/", http.StripPrefix("/swarm/data/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.ranges = append(s.ranges, r.Header.Get("Range"))
		s.mu.Unlock()
		if s.seedOff.Load() {
			http.Error(w, "off", http.StatusServiceUnavailable)
			return
		}
		ws.ServeHTTP(w, r)
	})))
	return mux
}

// restart stops the server and, after down, starts a new one (tracker
// and web seed anew, as a restarted imprint serve) on the same address.
func (s *server) restart(t *testing.T, st store.Source, down time.Duration) {
	t.Helper()
	addr := s.Listener.Addr().String()
	s.Close()
	time.Sleep(down)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	s.Server = &httptest.Server{Listener: l, Config: &http.Server{Handler: s.handler(t, st)}}
	s.Start()
	t.Cleanup(s.Close)
}

// The server (tracker and only seed) restarting on the same port while
// two nodes fetch: they finish, identical.
func TestTheServerRestartingMidRun(t *testing.T) {
	st, m, want := testImage(t)
	srv := newServer(t, st)
	url := srv.URL
	ctx := t.Context()
	var fetching []*node
	for _, ip := range []string{"127.0.0.3", "127.0.0.4"} {
		fetching = append(fetching, newNodeOpts(t, Options{Listen: ip + ":0", DownloadRate: 1 << 20}, m, url, nil))
	}
	total := len(fetching[0].sess.Tor.Chunks)
	deadline := time.Now().Add(10 * time.Second)
	for fetching[0].sess.Missing() == total && fetching[1].sess.Missing() == total {
		if time.Now().After(deadline) {
			t.Fatal("no piece came in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fetching[0].sess.Missing() == 0 && fetching[1].sess.Missing() == 0 {
		t.Fatal("both were done before the server could restart")
	}
	srv.restart(t, st, time.Second)
	if srv.URL != url {
		t.Fatalf("restarted at %s, not %s", srv.URL, url)
	}
	for _, n := range fetching {
		if err := n.sess.Wait(ctx, 20*time.Second); err != nil {
			t.Fatalf("%s: %v", n.Addr(), err)
		}
		n.same(t, want)
	}
}

// node is a swarm node with its partitions in files; with have, it
// holds the image already (a seed).
type node struct {
	*Node
	files []*os.File
	sess  *Session
}

func newNode(t testing.TB, ip string, m *image.Manifest, srv string, have [][]byte, corrupt bool) *node {
	t.Helper()
	return newNodeOpts(t, Options{Listen: ip + ":0", corrupt: corrupt}, m, srv, have)
}

func newNodeOpts(t testing.TB, o Options, m *image.Manifest, srv string, have [][]byte) *node {
	t.Helper()
	n, err := NewNode(o)
	if err != nil {
		t.Fatal(err)
	}
	nd := &node{Node: n}
	var places []Place
	for i, p := range m.Partitions {
		f, err := os.Create(filepath.Join(t.TempDir(), p.Name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if err := f.Truncate(p.Content.Size); err != nil {
			t.Fatal(err)
		}
		pl := Place{Content: p.Content, Target: f}
		if have != nil {
			if _, err := f.WriteAt(have[i], 0); err != nil {
				t.Fatal(err)
			}
			pl.Have = func(int) bool { return true }
		}
		nd.files = append(nd.files, f)
		places = append(places, pl)
	}
	// The node stops before its files close (cleanups run last first):
	// the engine panics on a failed read for a peer of a closed torrent.
	t.Cleanup(func() { n.Close() })
	if nd.sess, err = n.Join(m, srv, places); err != nil {
		t.Fatal(err)
	}
	return nd
}

func (nd *node) same(t *testing.T, want [][]byte) {
	t.Helper()
	for i, f := range nd.files {
		got, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[i]) {
			t.Fatalf("%s: partition %d differs from the image", nd.Addr(), i)
		}
	}
}

func TestThreeNodesEndIdenticalAndShare(t *testing.T) {
	st, m, want := testImage(t)
	srv := newServer(t, st)
	ctx := t.Context()
	// The first node takes everything from the web seed.
	a := newNode(t, "127.0.0.2", m, srv.URL, nil, false)
	if err := a.sess.Wait(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	a.same(t, want)
	_, seeded := a.sess.Stats()
	if seeded == 0 {
		t.Fatal("the first node took nothing from the web seed")
	}
	// With the web seed off, the next two can only have it from the
	// first and from each other.
	srv.seedOff.Store(true)
	b := newNode(t, "127.0.0.3", m, srv.URL, nil, false)
	c := newNode(t, "127.0.0.4", m, srv.URL, nil, false)
	for _, n := range []*node{b, c} {
		if err := n.sess.Wait(ctx, 20*time.Second); err != nil {
			t.Fatalf("%s: %v", n.Addr(), err)
		}
		n.same(t, want)
		if peers, _ := n.sess.Stats(); peers == 0 {
			t.Fatalf("%s: nothing from peers", n.Addr())
		}
	}
	if n := srv.tracker.Peers(a.sess.Tor.Hash); n != 3 {
		t.Errorf("the tracker knows %d peers, want 3", n)
	}
}

// A seed that flips a byte of every block it sends: its pieces fail,
// the nodes end identical from the honest seed, and the corrupting seed is
// banned. With 1 MiB pieces (64 blocks) nearly every piece it touches also
// has honest blocks, where the engine's own ban (a failed piece from one
// peer only) never fires: the ban must come from comparing its blocks with
// the piece once it checks good.
func TestACorruptingPeerIsCaught(t *testing.T) {
	for _, tc := range []struct {
		chunk int64
		piece int64 // as withPieces: 0 the default, -1 pieces are chunks
		rate  int64 // the corrupting seed's upload rate, bytes/s; 0: no limit
	}{{testChunk, 0, 0}, {1 << 20, 0, 0}, {1 << 20, -1, 0}, {1 << 20, 0, 256 << 10}} {
		t.Run(fmt.Sprintf("chunk=%dK,piece=%d,rate=%d", tc.chunk>>10, tc.piece, tc.rate), func(t *testing.T) {
			st, m, want := testImagePieces(t, tc.chunk, tc.piece)
			srv := newServer(t, st)
			srv.seedOff.Store(true)
			ctx := t.Context()
			newNode(t, "127.0.0.2", m, srv.URL, want, false)
			newNodeOpts(t, Options{Listen: "127.0.0.9:0", corrupt: true, UploadRate: tc.rate}, m, srv.URL, want)
			b := newNode(t, "127.0.0.3", m, srv.URL, nil, false)
			c := newNode(t, "127.0.0.4", m, srv.URL, nil, false)
			failed := int64(0)
			for _, n := range []*node{b, c} {
				if err := n.sess.Wait(ctx, 30*time.Second); err != nil {
					t.Fatalf("%s: %v", n.Addr(), err)
				}
				n.same(t, want)
				failed += n.sess.Failed()
			}
			if failed == 0 {
				t.Fatal("no piece failed its check: the corrupting peer was never used")
			}
			badIP := "127.0.0.9"
			for _, n := range []*node{b, c} {
				if n.sess.Failed() == 0 {
					continue
				}
				// The ban is given on another goroutine, under the
				// engine's lock, just after the piece checks.
				banned := func() bool { return contains(n.Banned(), badIP) || contains(n.Banned(), "::ffff:"+badIP) }
				for deadline := time.Now().Add(5 * time.Second); !banned() && time.Now().Before(deadline); {
					time.Sleep(20 * time.Millisecond)
				}
				if !banned() {
					t.Errorf("%s: took bad pieces but banned %v, not %s", n.Addr(), n.Banned(), badIP)
				}
				for _, ip := range n.Banned() {
					if ip != badIP && ip != "::ffff:"+badIP {
						t.Errorf("%s: banned an honest peer %s", n.Addr(), ip)
					}
				}
				if !answered(t, "127.0.0.77", n.Addr().String(), n.sess.Tor.Hash) {
					t.Errorf("%s: an address never banned was not answered: the next check proves nothing", n.Addr())
				}
				if answered(t, badIP, n.Addr().String(), n.sess.Tor.Hash) {
					t.Errorf("%s: the banned peer connected again and was answered", n.Addr())
				}
			}
		})
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// A seed that vanishes while two nodes are fetching from it: they finish
// from the other seed (the web seed is off), identical.
func TestAPeerVanishingMidTransfer(t *testing.T) {
	st, m, want := testImage(t)
	srv := newServer(t, st)
	srv.seedOff.Store(true)
	ctx := t.Context()
	gone := newNode(t, "127.0.0.2", m, srv.URL, want, false)
	newNode(t, "127.0.0.5", m, srv.URL, want, false)
	// Slow enough (1 MiB/s of a 3 MiB image) that the seed goes mid-way.
	var fetching []*node
	for _, ip := range []string{"127.0.0.3", "127.0.0.4"} {
		fetching = append(fetching, newNodeOpts(t, Options{Listen: ip + ":0", DownloadRate: 1 << 20}, m, srv.URL, nil))
	}
	total := len(fetching[0].sess.Tor.Chunks)
	deadline := time.Now().Add(10 * time.Second)
	for fetching[0].sess.Missing() == total || fetching[1].sess.Missing() == total {
		if time.Now().After(deadline) {
			t.Fatal("no piece came in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fetching[0].sess.Missing() == 0 && fetching[1].sess.Missing() == 0 {
		t.Fatal("both were done before the seed could vanish")
	}
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range fetching {
		if err := n.sess.Wait(ctx, 15*time.Second); err != nil {
			t.Fatalf("%s: %v", n.Addr(), err)
		}
		n.same(t, want)
	}
}

// A node with AllowedNets gives nothing to a peer outside them (web seed
// off, it is the only source): that peer stalls, while one inside gets
// the whole image from it.
func TestAPeerOutsideTheAllowedNetsIsRefused(t *testing.T) {
	st, m, want := testImage(t)
	srv := newServer(t, st)
	srv.seedOff.Store(true)
	inside := netip.MustParsePrefix("127.0.0.3/32")
	newNodeOpts(t, Options{Listen: "127.0.0.2:0", AllowedNets: []netip.Prefix{inside}}, m, srv.URL, want)
	out := newNode(t, "127.0.0.4", m, srv.URL, nil, false)
	if err := out.sess.Wait(t.Context(), 2*time.Second); !errors.Is(err, ErrStalled) {
		t.Fatalf("a peer outside %v: %v, want ErrStalled", inside, err)
	}
	if peers, _ := out.sess.Stats(); peers != 0 {
		t.Fatalf("a peer outside %v got %d bytes from the node", inside, peers)
	}
	in := newNode(t, "127.0.0.3", m, srv.URL, nil, false)
	if err := in.sess.Wait(t.Context(), 20*time.Second); err != nil {
		t.Fatalf("a peer inside %v: %v", inside, err)
	}
	in.same(t, want)
}

// A node whose only peer was not listening when it first dialed it (a
// peer starting late, a handshake that timed out) gets it again from the
// tracker within a few seconds, not at the engine's next announce a
// minute later: it finishes from that peer (the web seed is off).
func TestAPeerThatFailedItsFirstDialIsTriedAgain(t *testing.T) {
	st, m, want := testImage(t)
	srv := newServer(t, st)
	srv.seedOff.Store(true)
	tor, err := FromManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	// A port on 127.0.0.2, announced for a seed that is not there yet:
	// until it is, a listener there takes b's dials and closes them at
	// once (as a peer whose handshake failed), counting them.
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	var dials atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			c.Close()
		}
	}()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	if _, err := (tracker.Announce{TrackerUrl: AnnounceURL(srv.URL), DialContext: d.DialContext, Context: t.Context(),
		Request: tracker.AnnounceRequest{InfoHash: tor.Hash, PeerId: [20]byte{'x'}, Port: uint16(port), Left: 0, NumWant: -1, Event: tracker.Started}}).Do(); err != nil {
		t.Fatal(err)
	}
	b := newNodeOpts(t, Options{Listen: "127.0.0.3:0", Reannounce: 300 * time.Millisecond}, m, srv.URL, nil)
	for deadline := time.Now().Add(10 * time.Second); dials.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("b never dialed the announced seed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.Close()
	// The seed knows no tracker: it never learns of b, so only b can make
	// the connection.
	newNodeOpts(t, Options{Listen: fmt.Sprintf("127.0.0.2:%d", port)}, m, "", want)
	if err := b.sess.Wait(t.Context(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b.same(t, want)
}

// answered says a BitTorrent handshake for infohash from the address ip to
// the node at addr gets the node's handshake back (a banned address gets
// its connection closed instead).
func answered(t *testing.T, ip, addr string, infohash [20]byte) bool {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	hs := append([]byte("\x13BitTorrent protocol"), make([]byte, 8)...)
	hs = append(hs, infohash[:]...)
	hs = append(hs, []byte("-XX0000-banned-test0")...)
	if _, err := c.Write(hs); err != nil {
		return false
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _ := io.ReadFull(c, make([]byte, 20))
	return n == 20
}
