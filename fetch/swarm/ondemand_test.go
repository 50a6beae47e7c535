package swarm

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
)

// onDemandNode joins m's swarm at ip to read its root partition on demand.
func onDemandNode(t *testing.T, ip string, m *image.Manifest, srv string, o OnDemandOptions) *OnDemand {
	t.Helper()
	n, err := NewNode(Options{Listen: ip + ":0", Reannounce: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	d, err := n.JoinOnDemand(m, m.Partitions[0].Content, srv, o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// waitPeerHas waits until a connected peer of d has chunk sum.
func waitPeerHas(t *testing.T, d *OnDemand, sum string) {
	t.Helper()
	p := d.s.Tor.Index[sum]
	for deadline := time.Now().Add(10 * time.Second); !d.peerHas(p); {
		if time.Now().After(deadline) {
			t.Fatalf("no connected peer has chunk %s after 10 s (%d peers)", sum, len(d.s.t.PeerConns()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rootChunks are the root partition's non-zero chunks by index, with
// their bytes.
func rootChunks(m *image.Manifest, root []byte) map[int][]byte {
	c := m.Partitions[0].Content
	out := map[int][]byte{}
	for i, sum := range c.Chunks {
		if sum != image.ZeroChunk {
			out[i] = root[int64(i)*m.ChunkSize : int64(i)*m.ChunkSize+c.ChunkLen(i, m.ChunkSize)]
		}
	}
	return out
}

// An on-demand node takes the chunks it is asked for from a seeding peer
// (web seed off: the peer is the only place they are), those and no
// others: nothing is fetched that no read asked for.
func TestOnDemandTakesAskedChunksFromAPeer(t *testing.T) {
	st, m, want := testImage(t)
	srv := newServer(t, st)
	srv.seedOff.Store(true)
	newNode(t, "127.0.0.2", m, srv.URL, want, false)
	d := onDemandNode(t, "127.0.0.3", m, srv.URL, OnDemandOptions{Connect: 5 * time.Second})
	c := m.Partitions[0].Content
	chunks := rootChunks(m, want[0])
	asked := int64(0)
	for _, i := range []int{0, 5, 20} {
		got, err := d.Chunk(t.Context(), c.Chunks[i])
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if !bytes.Equal(got, chunks[i]) {
			t.Fatalf("chunk %d: the bytes differ from the image's", i)
		}
		asked += int64(len(got))
	}
	// The engine wants nothing else: a while later it still holds only
	// what was asked for.
	time.Sleep(500 * time.Millisecond)
	s := d.Stats()
	if s.FromPeers != asked || s.Held != asked || s.PeerChunks != 3 {
		t.Fatalf("asked for 3 chunks (%d bytes): %+v", asked, s)
	}
	// Asked again, a chunk is answered from RAM.
	if got, err := d.Chunk(t.Context(), c.Chunks[5]); err != nil || !bytes.Equal(got, chunks[5]) {
		t.Fatalf("chunk 5 again: %v", err)
	}
	if s := d.Stats(); s.PeerChunks != 3 {
		t.Fatalf("chunk 5 taken twice: %+v", s)
	}
}

// A chunk no peer has is given up on within Connect while the node holds
// nothing (it has no peers yet), at once when it holds a chunk, and one a
// peer has but does not send (its reads hang) once Quiet has passed: a
// read never hangs on the swarm.
func TestOnDemandGivesUpInBoundedTime(t *testing.T) {
	st, m, want := testImage(t)
	srv := newServer(t, st)
	srv.seedOff.Store(true)
	d := onDemandNode(t, "127.0.0.3", m, srv.URL, OnDemandOptions{Quiet: 300 * time.Millisecond, Most: 2 * time.Second, Connect: time.Second})
	c := m.Partitions[0].Content
	chunks := rootChunks(m, want[0])
	for _, tc := range []struct {
		what     string
		min, max time.Duration
	}{{"holding nothing", time.Second, 3 * time.Second}, {"holding a chunk", 0, 500 * time.Millisecond}} {
		begin := time.Now()
		if _, err := d.Chunk(t.Context(), c.Chunks[0]); !errors.Is(err, ErrNotFromPeers) {
			t.Fatalf("no peer, %s: %v, want ErrNotFromPeers", tc.what, err)
		}
		if took := time.Since(begin); took < tc.min || took > tc.max {
			t.Fatalf("no peer, %s: given up after %v, want %v..%v", tc.what, took, tc.min, tc.max)
		}
		d.Have(c.Chunks[9], chunks[9]) // as from the sources
	}
	// A peer that says it has every chunk and sends none.
	stuck, err := NewNode(Options{Listen: "127.0.0.2:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stuck.Close() })
	// Released before the node closes (cleanups run last first): closing
	// waits for the reads under way.
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var places []Place
	for i, p := range m.Partitions {
		places = append(places, Place{Content: p.Content, Target: hanging{release, bytes.NewReader(want[i])}, Have: func(int) bool { return true }})
	}
	if _, err := stuck.Join(m, srv.URL, places); err != nil {
		t.Fatal(err)
	}
	waitPeerHas(t, d, c.Chunks[1])
	begin := time.Now()
	if _, err := d.Chunk(t.Context(), c.Chunks[1]); !errors.Is(err, ErrNotFromPeers) {
		t.Fatalf("a peer that sends nothing: %v, want ErrNotFromPeers", err)
	}
	if took := time.Since(begin); took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("a peer that sends nothing: given up after %v, want 300ms..2s", took)
	}
}

// hanging is a seed's partition whose reads wait until release.
type hanging struct {
	release chan struct{}
	r       *bytes.Reader
}

func (h hanging) ReadAt(b []byte, off int64) (int, error) {
	<-h.release
	return h.r.ReadAt(b, off)
}

func (hanging) WriteAt(b []byte, _ int64) (int, error) { return len(b), nil }

// A peer that corrupts every block it sends never gets a byte to a
// caller: alone, its chunks are given up on (and it is banned); with an
// honest peer beside it, the right bytes come.
func TestOnDemandCorruptingPeerGivesNoBadByte(t *testing.T) {
	st, m, want := testImage(t)
	srv := newServer(t, st)
	srv.seedOff.Store(true)
	newNodeOpts(t, Options{Listen: "127.0.0.9:0", corrupt: true}, m, srv.URL, want)
	d := onDemandNode(t, "127.0.0.3", m, srv.URL, OnDemandOptions{Quiet: 500 * time.Millisecond, Most: 3 * time.Second, Connect: 5 * time.Second})
	c := m.Partitions[0].Content
	chunks := rootChunks(m, want[0])
	got, err := d.Chunk(t.Context(), c.Chunks[0])
	if err == nil {
		t.Fatalf("the corrupting peer alone gave chunk 0 (right bytes: %v)", bytes.Equal(got, chunks[0]))
	}
	if !errors.Is(err, ErrNotFromPeers) {
		t.Fatalf("the corrupting peer alone: %v, want ErrNotFromPeers", err)
	}
	if d.Stats().FailedCheck == 0 {
		t.Fatal("no piece failed its check: the corrupting peer was never asked")
	}
	newNode(t, "127.0.0.2", m, srv.URL, want, false)
	for _, i := range []int{0, 1, 4, 8, 9} {
		got, err := d.Chunk(t.Context(), c.Chunks[i])
		if err != nil {
			// Given up on while the peers sort out is allowed; a bad
			// byte is not.
			t.Logf("chunk %d: %v", i, err)
			continue
		}
		if !bytes.Equal(got, chunks[i]) {
			t.Fatalf("chunk %d: bad bytes reached the caller", i)
		}
	}
	if d.Stats().PeerChunks == 0 {
		t.Fatal("the honest peer gave no chunk")
	}
}

// What a node holds, handed in from its sources or taken from peers, it
// offers: a second on-demand node takes it from the first (web seed off,
// no other peer), and a third from the second.
func TestOnDemandNodesSeedWhatTheyHold(t *testing.T) {
	st, m, want := testImage(t)
	srv := newServer(t, st)
	srv.seedOff.Store(true)
	c := m.Partitions[0].Content
	chunks := rootChunks(m, want[0])
	a := onDemandNode(t, "127.0.0.3", m, srv.URL, OnDemandOptions{})
	// As a reader does with a chunk its sources gave.
	a.Have(c.Chunks[3], chunks[3])
	a.Have(c.Chunks[4], chunks[4])
	b := onDemandNode(t, "127.0.0.4", m, srv.URL, OnDemandOptions{Connect: 5 * time.Second})
	for _, i := range []int{3, 4} {
		got, err := b.Chunk(t.Context(), c.Chunks[i])
		if err != nil || !bytes.Equal(got, chunks[i]) {
			t.Fatalf("b, chunk %d from a: %v", i, err)
		}
	}
	if _, err := b.Chunk(t.Context(), c.Chunks[5]); !errors.Is(err, ErrNotFromPeers) {
		t.Fatalf("b, chunk 5 nobody holds: %v", err)
	}
	if s := a.Stats(); s.Uploaded == 0 || s.HandedIn != int64(len(chunks[3])+len(chunks[4])) {
		t.Fatalf("a: %+v", s)
	}
	// b took chunk 4 from a; with a gone, c takes it from b.
	a.Leave()
	cn := onDemandNode(t, "127.0.0.5", m, srv.URL, OnDemandOptions{Connect: 5 * time.Second})
	if got, err := cn.Chunk(t.Context(), c.Chunks[4]); err != nil || !bytes.Equal(got, chunks[4]) {
		t.Fatalf("c, chunk 4 from b: %v", err)
	}
}

// A large chunk gets the time it needs at 1 MiB/s before it is given up
// on, unless the caller set Most: 5 s is too short for 64 MiB over
// 100 Mbit/s, and every miss would wait 5 s only to go to the sources.
func TestMostGrowsWithTheChunk(t *testing.T) {
	tor := &Torrent{Chunks: []image.TorrentChunk{{Length: 1 << 20}, {Length: 64 << 20}}}
	for _, tc := range []struct {
		set  bool
		p    int
		want time.Duration
	}{{false, 0, 5 * time.Second}, {false, 1, 64 * time.Second}, {true, 1, 5 * time.Second}} {
		d := &OnDemand{s: &Session{Tor: tor}, o: OnDemandOptions{Most: 5 * time.Second}, mostSet: tc.set}
		if got := d.most(tc.p); got != tc.want {
			t.Errorf("piece of %d MiB, Most set %v: %v, want %v", tor.Chunks[tc.p].Length>>20, tc.set, got, tc.want)
		}
	}
}
