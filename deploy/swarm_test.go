package deploy

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/fetch/swarm"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
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

// A resumed deploy whose journal has a chunk written at one of its
// offsets and not at another copies it there from the disk at the start
// of the swarm phase: those bytes were written by this run, not given by
// the swarm, and the result says so (FromSwarm counted them before).
func TestAChunkCopiedFromTheDiskIsNotCountedAsFromTheSwarm(t *testing.T) {
	const cs = 64 << 10
	st, err := store.CreateDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 8<<20)
	rand.Read(data)
	copy(data[10*cs:11*cs], data[3*cs:4*cs]) // chunk 3 again at 10
	c, _, err := image.StoreContent(t.Context(), st, bytes.NewReader(data), int64(len(data)), cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &image.Manifest{Format: image.FormatVersion, Name: "unit", Version: "1", Created: time.Unix(1700000000, 0).UTC(), ChunkSize: cs,
		Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}}}
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	img, err := store.Resolve(t.Context(), st, "unit", "1")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 200<<20); err != nil {
		t.Fatal(err)
	}
	dev, err := disk.OpenDisk(p, disk.OpenOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	plan, err := MakePlan(dev, img, PlanOptions{Layout: smallLayout(t, img), Firmware: "uefi", DiskName: p})
	if err != nil {
		t.Fatal(err)
	}
	tg := &Target{Dev: dev, Image: img, Plan: plan}
	if err := tg.Partition(t.Context()); err != nil {
		t.Fatal(err)
	}
	// An earlier run wrote chunk 3 (and journaled it), not chunk 10.
	root, ok := tg.State.Table.Find(tg.State.PartitionOf("root"))
	if !ok {
		t.Fatal("no root partition in the table")
	}
	if _, err := dev.WriteAt(data[3*cs:4*cs], root.Start+3*cs); err != nil {
		t.Fatal(err)
	}
	tg.State.Done["root"].Set(3)

	n, err := swarm.NewNode(swarm.Options{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	cp, err := NewCopier([]store.Source{st}, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Dec.Close()
	// No tracker and no peer answer: the swarm gives nothing, the
	// sources the rest.
	w, err := tg.WriteContents(t.Context(), cp, WriteOptions{Verify: true,
		Swarm: &SwarmOptions{Node: n, Server: "http://127.0.0.1:1", Stall: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if w.FromSwarm != 0 || w.Skipped != cs || w.Written != int64(len(data))-cs || !w.Verified {
		t.Fatalf("%+v: want nothing from the swarm, chunk 3 skipped, the rest (chunk 10 copied) written, verified", w)
	}
	got := make([]byte, cs)
	if _, err := dev.ReadAt(got, root.Start+10*cs); err != nil || !bytes.Equal(got, data[3*cs:4*cs]) {
		t.Fatalf("chunk 10 on the disk: %v, equal %v", err, bytes.Equal(got, data[3*cs:4*cs]))
	}
}
