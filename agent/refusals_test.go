package agent

import (
	"strings"
	"testing"
	"time"
)

// TestRefusedWebSeedAnswersAreSaidOnceEveryPeriodWithACount: a stale web
// seed refuses every miss's pieces; the console hears it once a period
// a source, with how many went unsaid, not once a miss.
func TestRefusedWebSeedAnswersAreSaidOnceEveryPeriodWithACount(t *testing.T) {
	r := refusals{every: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	said := 0
	for k := range 50 {
		if _, ok := r.say(0, t0.Add(time.Duration(k)*100*time.Millisecond)); ok {
			said++
		}
	}
	if said != 1 {
		t.Fatalf("said %d times in 5 s, want once", said)
	}
	if _, ok := r.say(1, t0.Add(time.Second)); !ok {
		t.Fatal("another source's first refusal not said")
	}
	more, ok := r.say(0, t0.Add(11*time.Second))
	if !ok || !strings.Contains(more, "49 refused answers not said") {
		t.Fatalf("after the period: %q, %v; want said, with the 49 unsaid", more, ok)
	}
}
