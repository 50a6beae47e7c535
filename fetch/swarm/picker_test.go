package swarm

import (
	"math/rand/v2"
	"testing"
)

// TestPickerWindowBoundedAndEveryChunkWanted drives the picker the way a
// swarm does: only pieces of wanted chunks arrive, peers come to hold
// chunks at random, a chunk whose pieces are all in is done. The window
// never holds solo+shared+one chunk's pieces or more before every chunk
// is wanted, never drops a chunk before it is done, is never empty while
// a chunk is missing, and the node ends with every chunk.
func TestPickerWindowBoundedAndEveryChunkWanted(t *testing.T) {
	for _, tc := range []struct {
		name         string
		chunks, per  int // chunks, pieces per chunk
		solo, shared int
		peerRate     float64 // chance per round that a chunk comes to a peer
	}{
		{"few chunks", 3, 16, 64, 192, 0.1},
		{"no peers ever", 64, 16, 64, 192, 0},
		{"busy swarm", 256, 16, 64, 192, 0.05},
		{"large image", 1024, 4, 16, 48, 0.01},
		{"only shared window", 64, 16, 0, 32, 0.05},
		{"pieces are chunks", 300, 1, 8, 8, 0.02},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			need := make([]int, tc.chunks)
			lack := make([]int, tc.chunks)
			for k := range need {
				need[k] = k
				lack[k] = tc.per
			}
			held := make([]bool, tc.chunks)
			pk := newPicker(need, tc.solo, tc.shared, r)
			needs := func(k int) bool { return lack[k] > 0 }
			lacking := func(k int) int { return lack[k] }
			atPeers := func(k int) bool { return held[k] }
			prev := map[int]bool{}
			left := tc.chunks
			for round := 0; left > 0; round++ {
				if round > 100*tc.chunks*tc.per {
					t.Fatalf("%d chunks never done: the picker stopped wanting them", left)
				}
				for k := range held {
					if r.Float64() < tc.peerRate {
						held[k] = true
					}
				}
				w := pk.pick(needs, lacking, atPeers, false)
				if len(w) == 0 {
					t.Fatalf("round %d: nothing wanted with %d chunks missing", round, left)
				}
				for k := range prev {
					if needs(k) && !w[k] {
						t.Fatalf("round %d: chunk %d dropped from the window before it was done", round, k)
					}
				}
				sum := 0
				for k := range w {
					if !needs(k) {
						t.Fatalf("round %d: done chunk %d wanted", round, k)
					}
					sum += lack[k]
				}
				if !pk.all && sum >= tc.solo+tc.shared+tc.per {
					t.Fatalf("round %d: %d pieces wanted, window is %d+%d (+%d)", round, sum, tc.solo, tc.shared, tc.per)
				}
				prev = map[int]bool{}
				for k := range w {
					prev[k] = true
				}
				// A few wanted pieces arrive per round, from a peer or the server.
				n := 0
				for k := range w {
					if n == 3 {
						break
					}
					lack[k]--
					n++
					if lack[k] == 0 {
						left--
					}
				}
			}
		})
	}
}

// TestPickerIdleWantsEverything: a node that got no byte for a while
// wants every missing chunk, from then on.
func TestPickerIdleWantsEverything(t *testing.T) {
	need := make([]int, 40)
	for k := range need {
		need[k] = k
	}
	pk := newPicker(need, 16, 16, rand.New(rand.NewPCG(3, 4)))
	yes := func(int) bool { return true }
	lacking := func(int) int { return 16 }
	no := func(int) bool { return false }
	if got := len(pk.pick(yes, lacking, no, false)); got != 1 {
		t.Fatalf("no peers: %d chunks wanted, want 1 (the solo window, 16 pieces)", got)
	}
	if got := len(pk.pick(yes, lacking, no, true)); got != len(need) {
		t.Fatalf("idle: %d chunks wanted, want all %d", got, len(need))
	}
	if got := len(pk.pick(yes, lacking, no, false)); got != len(need) {
		t.Fatalf("after idle: %d chunks wanted, want still all %d", got, len(need))
	}
}

// TestPickerTakesChunksPeersHold: with a chunk at a peer and the solo
// window full, the shared window takes it.
func TestPickerTakesChunksPeersHold(t *testing.T) {
	need := make([]int, 64)
	for k := range need {
		need[k] = k
	}
	pk := newPicker(need, 16, 16, rand.New(rand.NewPCG(5, 6)))
	w := pk.pick(func(int) bool { return true }, func(int) int { return 16 },
		func(k int) bool { return k == 17 }, false)
	if !w[17] || len(w) != 2 {
		t.Fatalf("wanted %v, want chunk 17 (a peer holds it) and one server-only chunk", w)
	}
}

// TestPickerRestFitsWantsAll: once the missing pieces fit the window,
// every chunk is wanted (no chunk waits at None near the end).
func TestPickerRestFitsWantsAll(t *testing.T) {
	need := []int{0, 1, 2, 3}
	pk := newPicker(need, 2, 2, rand.New(rand.NewPCG(7, 8)))
	if got := len(pk.pick(func(int) bool { return true }, func(int) int { return 1 },
		func(int) bool { return false }, false)); got != 4 {
		t.Fatalf("4 missing pieces, window 4: %d chunks wanted, want all 4", got)
	}
}
