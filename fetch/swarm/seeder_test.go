package swarm

import (
	"context"
	"errors"
	"testing"
	"time"
)

// newSeeder is the server's seeding peer on ip over the server's store.
func newSeeder(t testing.TB, ip string, srv *server, ws *WebSeed) *Seeder {
	t.Helper()
	n, err := NewNode(Options{Listen: ip + ":0"})
	if err != nil {
		t.Fatal(err)
	}
	sd := &Seeder{Node: n, Server: srv.URL, Seed: ws}
	t.Cleanup(func() { sd.Close() })
	return sd
}

// The server's seeding peer alone (web seed off, no other peer) gives a
// node the whole image: every piece read from the store's zstd chunks.
func TestTheServersSeedingPeerGivesTheWholeImage(t *testing.T) {
	for _, tc := range []struct {
		name        string
		size, chunk int64
	}{
		{"8MiB of 64KiB chunks", 8 << 20, 64 << 10},
		{"16MiB of 1MiB chunks", 16 << 20, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, m, want := bigImage(t, tc.size, tc.chunk)
			srv := newServer(t, st)
			srv.seedOff.Store(true)
			ws := &WebSeed{Src: st}
			t.Cleanup(ws.Close)
			sd := newSeeder(t, "127.0.0.2", srv, ws)
			if err := sd.Offer(t.Context(), m.Name, m.Version); err != nil {
				t.Fatal(err)
			}
			// Twice is once.
			if err := sd.Offer(t.Context(), m.Name, m.Version); err != nil {
				t.Fatal(err)
			}
			b := newNode(t, "127.0.0.3", m, srv.URL, nil, false)
			total := len(b.sess.Tor.Chunks)
			if err := b.sess.Wait(t.Context(), 10*time.Second); err != nil {
				t.Fatalf("%v (%d of %d pieces came)", err, total-b.sess.Missing(), total)
			}
			b.same(t, want)
			if peers, seeds := b.sess.Stats(); peers < tc.size || seeds != 0 {
				t.Fatalf("%d bytes from peers, %d from the web seed; want the whole %d from the peer", peers, seeds, tc.size)
			}
			if got := len(srv.rangeLens(t)); got != 0 {
				t.Fatalf("%d web seed requests while the server's peer served", got)
			}
		})
	}
}

// A version the store does not hold is an error naming it, and nothing
// is seeded.
func TestTheSeedingPeerRefusesAMissingVersion(t *testing.T) {
	st, m, _ := bigImage(t, 1<<20, 64<<10)
	srv := newServer(t, st)
	ws := &WebSeed{Src: st}
	t.Cleanup(ws.Close)
	sd := newSeeder(t, "127.0.0.2", srv, ws)
	err := sd.Offer(t.Context(), m.Name, "nope")
	if err == nil {
		t.Fatal("seeded a version the store does not hold")
	}
	if len(sd.seeding) != 0 {
		t.Fatalf("seeding %v", sd.seeding)
	}
}

// Wait's stall time counts from the last byte, not the last piece: a node
// on a link so slow that no 4 MiB piece completes within the stall time,
// while bytes keep coming, does not stall.
func TestASlowLinkWithBytesFlowingIsNotAStall(t *testing.T) {
	st, m, want := bigImage(t, 16<<20, 4<<20)
	srv := newServer(t, st)
	srv.seedOff.Store(true)
	newNode(t, "127.0.0.2", m, srv.URL, want, false)
	// The limiter's burst is 1 MiB, then 256 KiB/s (the engine reads
	// 128 KiB at a time, every half second): a 4 MiB piece takes 12 s.
	b := newNodeOpts(t, Options{Listen: "127.0.0.3:0", DownloadRate: 256 << 10}, m, srv.URL, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	err := b.sess.Wait(ctx, 1500*time.Millisecond)
	if errors.Is(err, ErrStalled) {
		t.Fatalf("stalled while bytes came: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v, want the context's deadline (the transfer takes a minute)", err)
	}
	if got, _ := b.sess.Stats(); got == 0 {
		t.Fatal("no byte came at all: the test proves nothing")
	}
}

// No byte for the stall time is a stall: the only seed gone.
func TestNoBytesForTheStallTimeIsAStall(t *testing.T) {
	st, m, _ := bigImage(t, 4<<20, 1<<20)
	srv := newServer(t, st)
	srv.seedOff.Store(true)
	b := newNode(t, "127.0.0.3", m, srv.URL, nil, false)
	start := time.Now()
	err := b.sess.Wait(t.Context(), time.Second)
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("Wait: %v, want ErrStalled", err)
	}
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Fatalf("stalled after %v, want about 1 s", d)
	}
}
