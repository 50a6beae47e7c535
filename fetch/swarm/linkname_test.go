package swarm

import (
	"os"
	"strings"
	"testing"
)

// engine.go and blame.go reach into the engine's unexported functions
// with go:linkname. A function whose signature changed in another engine
// version still links, with a mismatched call: nothing would say so but
// a crash or corrupted state. So the version those were written against
// is pinned here (as go.mod requires it: a test binary carries no
// dependency versions): whoever upgrades the engine rereads them first.
func TestTheEngineIsTheVersionTheLinknamesWereWrittenFor(t *testing.T) {
	const mod, want = "github.com/anacrolix/torrent", "v1.59.1"
	raw, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	for _, l := range lines {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "replace" && f[1] == mod {
			t.Fatalf("go.mod replaces %s: check the linknames in engine.go and blame.go against it", mod)
		}
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == mod || (f[0] == "require" && len(f) >= 3 && f[1] == mod)) {
			v := f[1]
			if f[0] == "require" {
				v = f[2]
			}
			if v != want {
				t.Fatalf("go.mod requires %s %s; engine.go and blame.go link to %s's unexported Client.lock, unlock, updateWebseedRequestsWithReason, banPeerIP and webseedRequestChunkSize: check each against the new version, then change this test", mod, v, want)
			}
			return
		}
	}
	t.Fatalf("go.mod does not require %s", mod)
}
