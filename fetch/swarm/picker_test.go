package swarm

import (
	"math/rand/v2"
	"testing"
)

// TestPickerWindowBoundedAndEveryPieceWanted drives the picker the way a
// swarm does: only wanted pieces complete, peers come to hold pieces at
// random. The window never holds more than solo+shared pieces before the
// endgame, never a complete one, never drops a piece before it completes,
// and the node ends with every piece (no piece left unwanted forever).
func TestPickerWindowBoundedAndEveryPieceWanted(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		pieces                int
		solo, shared, endgame int
		peerRate              float64 // chance per round that a piece comes to a peer
	}{
		{"few pieces", 5, 2, 8, 4, 0.1},
		{"no peers ever", 64, 2, 8, 4, 0},
		{"busy swarm", 64, 2, 8, 4, 0.2},
		{"large image", 1024, 1, 4, 0, 0.01},
		{"only shared window", 64, 0, 3, 2, 0.05},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			need := make([]int, tc.pieces)
			for i := range need {
				need[i] = i
			}
			pk := newPicker(need, tc.solo, tc.shared, tc.endgame, r)
			done := make([]bool, tc.pieces)
			held := make([]int, tc.pieces)
			complete := func(p int) bool { return done[p] }
			peers := func(p int) int { return held[p] }
			prev := map[int]bool{}
			left := tc.pieces
			for round := 0; left > 0; round++ {
				if round > 100*tc.pieces {
					t.Fatalf("%d pieces never completed: the picker stopped wanting them", left)
				}
				for p := range held {
					if r.Float64() < tc.peerRate {
						held[p]++
					}
				}
				want := pk.pick(complete, peers, false)
				for p := range prev {
					if !done[p] && !want[p] {
						t.Fatalf("round %d: piece %d dropped from the window before it completed", round, p)
					}
				}
				if len(want) == 0 {
					t.Fatalf("round %d: nothing wanted with %d pieces missing", round, left)
				}
				if !pk.all && len(want) > tc.solo+tc.shared {
					t.Fatalf("round %d: %d pieces wanted, window is %d", round, len(want), tc.solo+tc.shared)
				}
				if left <= tc.endgame && len(want) != left {
					t.Fatalf("round %d: endgame (%d missing) wants only %d", round, left, len(want))
				}
				prev = map[int]bool{}
				for p := range want {
					if done[p] {
						t.Fatalf("round %d: complete piece %d wanted", round, p)
					}
					prev[p] = true
				}
				// One wanted piece completes per round (a peer or the server).
				for p := range want {
					done[p] = true
					left--
					break
				}
			}
		})
	}
}

// TestPickerIdleWantsEverything: a node that got no byte for a while wants
// every missing piece, from then on.
func TestPickerIdleWantsEverything(t *testing.T) {
	need := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	pk := newPicker(need, 1, 1, 0, rand.New(rand.NewPCG(3, 4)))
	none := func(int) bool { return false }
	zero := func(int) int { return 0 }
	if got := len(pk.pick(none, zero, false)); got != 1 {
		t.Fatalf("no peers: %d pieces wanted, want 1 (the solo window)", got)
	}
	if got := len(pk.pick(none, zero, true)); got != len(need) {
		t.Fatalf("idle: %d pieces wanted, want all %d", got, len(need))
	}
	if got := len(pk.pick(none, zero, false)); got != len(need) {
		t.Fatalf("after idle: %d pieces wanted, want still all %d", got, len(need))
	}
}

// TestPickerPrefersPiecesPeersHold: with a piece at a peer, the shared
// window takes it before the node's own order.
func TestPickerPrefersPiecesPeersHold(t *testing.T) {
	need := make([]int, 32)
	for i := range need {
		need[i] = i
	}
	pk := newPicker(need, 1, 1, 0, rand.New(rand.NewPCG(5, 6)))
	want := pk.pick(func(int) bool { return false }, func(p int) int {
		if p == 17 {
			return 1
		}
		return 0
	}, false)
	if !want[17] || len(want) != 2 {
		t.Fatalf("wanted %v, want piece 17 (a peer holds it) and one solo piece", want)
	}
}
