package ondemand_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/agent/ondemand"
	"github.com/imprint-dev/imprint/fetch"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

// swarmImage is an image of the test partition, and a server that is its
// swarm's tracker only (no web seed: peers or the reader's sources).
func swarmImage(t *testing.T, p partition) (*image.Manifest, string) {
	t.Helper()
	m := &image.Manifest{Format: image.FormatVersion, Name: "od", Version: "1", Created: time.Unix(1700000000, 0).UTC(), ChunkSize: cs,
		Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: p.content}}}
	mux := http.NewServeMux()
	mux.Handle("/swarm/announce", &swarm.Tracker{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Interval: time.Second})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return m, srv.URL
}

// seedPeer is a node at ip that holds the partition and seeds it, its
// bytes read from target.
func seedPeer(t *testing.T, ip string, m *image.Manifest, server string, target swarm.Target) {
	t.Helper()
	n, err := swarm.NewNode(swarm.Options{Listen: ip + ":0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if _, err := n.Join(m, server, []swarm.Place{{Content: m.Partitions[0].Content, Target: target, Have: func(int) bool { return true }}}); err != nil {
		t.Fatal(err)
	}
}

// swarmReader is a reader of the partition at ip, in the image's swarm,
// with srcs as its sources.
func swarmReader(t *testing.T, ip string, p partition, m *image.Manifest, server string, o swarm.OnDemandOptions, srcs ...store.Source) (*ondemand.Reader, *swarm.OnDemand) {
	t.Helper()
	n, err := swarm.NewNode(swarm.Options{Listen: ip + ":0", Reannounce: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	peers, err := n.JoinOnDemand(m, p.content, server, o)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := image.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	r, err := ondemand.New(ondemand.Options{
		Content: p.content, ChunkSize: cs, Decoder: dec, CacheBytes: cs, // the bound does not apply with peers
		Fetcher: fetch.New(srcs, fast()), Peers: peers,
		RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, peers
}

// readAll reads the whole partition, within 30 s: with the sources down
// a read that the swarm does not serve would otherwise wait for ever.
func readAll(t *testing.T, r *ondemand.Reader, want []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	got := make([]byte, len(want))
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the partition read differs from the image's")
	}
}

// With its sources down, a reader takes every chunk from a seeding peer.
func TestReadsTakeChunksFromASeedingPeer(t *testing.T) {
	p := makePartition(t)
	m, server := swarmImage(t, p)
	seedPeer(t, "127.0.1.2", m, server, plain{bytes.NewReader(p.raw)})
	src := newCounting(p.dir, "store")
	src.down.Store(true)
	r, peers := swarmReader(t, "127.0.1.3", p, m, server, swarm.OnDemandOptions{Connect: 5 * time.Second}, src)
	readAll(t, r, p.raw)
	st := r.Stats()
	if st.PeerChunks != 4 || st.PeerBytes != st.FetchedBytes || src.total() != 0 {
		t.Fatalf("4 data chunks, all from the peer: %+v, %d asked of the sources", st, src.total())
	}
	if ps := peers.Stats(); ps.FromPeers != st.PeerBytes || ps.Held != st.PeerBytes {
		t.Fatalf("reader %+v, swarm %+v", st, ps)
	}
}

// A reader whose chunks no peer has takes them from its sources, the
// first after Connect at most (it holds nothing and has no peer yet), the
// others at once; a second reader then takes every chunk from the first,
// its sources down: the first seeds what it read.
func TestASecondReaderTakesWhatTheFirstRead(t *testing.T) {
	p := makePartition(t)
	m, server := swarmImage(t, p)
	src := newCounting(p.dir, "store")
	a, aPeers := swarmReader(t, "127.0.1.3", p, m, server, swarm.OnDemandOptions{Connect: 300 * time.Millisecond}, src)
	begin := time.Now()
	readAll(t, a, p.raw)
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("no peer had a chunk, and reading 4 of them took %v", took)
	}
	if st := a.Stats(); st.PeerChunks != 0 || src.total() != 4 {
		t.Fatalf("first reader: %+v, %d asked of the sources, want all 4 from them", st, src.total())
	}
	down := newCounting(p.dir, "store")
	down.down.Store(true)
	b, _ := swarmReader(t, "127.0.1.4", p, m, server, swarm.OnDemandOptions{Connect: 5 * time.Second}, down)
	readAll(t, b, p.raw)
	if st := b.Stats(); st.PeerChunks != 4 {
		t.Fatalf("second reader: %+v, want all 4 chunks from the first", st)
	}
	if ps := aPeers.Stats(); ps.Uploaded < int64(len(p.raw)-cs) {
		t.Fatalf("the first reader sent %d bytes to peers, want the 4 chunks' %d", ps.Uploaded, len(p.raw)-cs)
	}
}

// A peer that flips a byte of everything it sends gets no bad byte to a
// read: its chunks fail their check, and the reads are given the sources'.
func TestACorruptingPeerGetsNoBadByteToARead(t *testing.T) {
	p := makePartition(t)
	m, server := swarmImage(t, p)
	seedPeer(t, "127.0.1.9", m, server, flipping{bytes.NewReader(p.raw)})
	src := newCounting(p.dir, "store")
	r, peers := swarmReader(t, "127.0.1.3", p, m, server, swarm.OnDemandOptions{Connect: 5 * time.Second, Quiet: 300 * time.Millisecond, Most: time.Second}, src)
	readAll(t, r, p.raw)
	if st := r.Stats(); st.PeerChunks != 0 || src.total() != 4 {
		t.Fatalf("%+v, %d asked of the sources: want all 4 from them", st, src.total())
	}
	if peers.Stats().FailedCheck == 0 {
		t.Fatal("no piece failed its check: the corrupting peer was never asked")
	}
}

// plain is a seeded partition (read-only: a seed holds every chunk).
type plain struct{ r *bytes.Reader }

func (p plain) ReadAt(b []byte, off int64) (int, error) { return p.r.ReadAt(b, off) }
func (plain) WriteAt(b []byte, _ int64) (int, error)    { return len(b), nil }

// flipping is a seeded partition whose every read has a byte flipped.
type flipping struct{ r *bytes.Reader }

func (f flipping) ReadAt(b []byte, off int64) (int, error) {
	n, err := f.r.ReadAt(b, off)
	if n > 0 {
		b[0] ^= 0xff
	}
	return n, err
}
func (flipping) WriteAt(b []byte, _ int64) (int, error) { return len(b), nil }

// With its sources down and no peer at first, a read waits; a seeding
// peer that joins a second later serves it: the peers are asked again
// between rounds of the sources, not only once per chunk.
func TestAPeerThatJoinsLateServesAWaitingRead(t *testing.T) {
	p := makePartition(t)
	m, server := swarmImage(t, p)
	src := newCounting(p.dir, "store")
	src.down.Store(true)
	r, _ := swarmReader(t, "127.0.1.3", p, m, server, swarm.OnDemandOptions{Connect: 300 * time.Millisecond}, src)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	got := make([]byte, len(p.raw))
	done := make(chan error, 1)
	go func() { done <- r.ReadAt(ctx, got, 0) }()
	time.Sleep(time.Second)
	seedPeer(t, "127.0.1.2", m, server, plain{bytes.NewReader(p.raw)})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, p.raw) {
		t.Fatal("the partition read differs from the image's")
	}
	if st := r.Stats(); st.PeerChunks != 4 {
		t.Fatalf("%+v: want all 4 data chunks from the late peer", st)
	}
}
