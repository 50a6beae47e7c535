package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
)

// A manifest whose swarm-pieces extension does not fit its chunks gives
// no torrent: Take says why, naming the extension (its callers then take
// every chunk from the sources), and touches nothing.
func TestTakeRefusesAMalformedSwarmPiecesExtension(t *testing.T) {
	n, err := swarm.NewNode(swarm.Options{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	sum := image.HashBytes([]byte("chunk"))
	c := &image.Content{Size: 1 << 20, SHA256: sum, Chunks: []string{sum}}
	m := &image.Manifest{Format: image.FormatVersion, Name: "demo", Version: "1", Created: time.Unix(0, 0).UTC(), ChunkSize: 1 << 20,
		Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}},
		Extensions: map[string]json.RawMessage{image.SwarmPiecesExtension: json.RawMessage(`{"piece_length": 65536, "hashes": "AAAA"}`)}}
	o := &SwarmOptions{Node: n, Server: "http://127.0.0.1:1"}
	err = o.Take(t.Context(), m, []swarm.Place{{Content: c, Done: func(int) { t.Error("a chunk was done") }}}, nil)
	if !errors.Is(err, image.ErrFormat) || !strings.Contains(err.Error(), image.SwarmPiecesExtension) {
		t.Fatalf("got %v, want an error naming %s", err, image.SwarmPiecesExtension)
	}
}

// A chunk the journal has as written at one of its places, whose bytes
// there are not the manifest's, is not trusted: it is fetched again, and
// Take says so.
func TestTakeSaysWhenAJournaledChunkDoesNotCheck(t *testing.T) {
	n, err := swarm.NewNode(swarm.Options{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	const cs = 1 << 20
	data := bytes.Repeat([]byte("imprint "), cs/8)
	sum := image.HashBytes(data)
	c := &image.Content{Size: 2 * cs, SHA256: image.HashBytes(append(bytes.Clone(data), data...)), Chunks: []string{sum, sum}}
	m := &image.Manifest{Format: image.FormatVersion, Name: "demo", Version: "1", Created: time.Unix(0, 0).UTC(), ChunkSize: cs,
		Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}}}
	f, err := os.Create(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	bad := bytes.Clone(data)
	bad[100] ^= 1
	if _, err := f.WriteAt(bad, 0); err != nil { // chunk 0: journaled, wrong bytes
		t.Fatal(err)
	}
	o := &SwarmOptions{Node: n, Server: "http://127.0.0.1:1", Stall: 300 * time.Millisecond}
	var warned []string
	err = o.Take(t.Context(), m, []swarm.Place{{Content: c, Target: f, Have: func(i int) bool { return i == 0 },
		Done: func(i int) { t.Errorf("chunk %d done with no source to give it", i) }}}, func(s string) { warned = append(warned, s) })
	if err == nil {
		t.Fatal("Take succeeded with no source for a chunk")
	}
	if !slices.ContainsFunc(warned, func(s string) bool { return strings.Contains(s, "1 chunks the journal had as written") }) {
		t.Errorf("warnings %q do not say that a journaled chunk did not check", warned)
	}
}
