package deploy

import (
	"encoding/json"
	"errors"
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
