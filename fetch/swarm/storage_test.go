package swarm

import (
	"os"
	"path/filepath"
	"testing"
)

// Once the engine closes a torrent's storage (Drop), the peer reads and
// writes it has not waited for leave the target alone, so the caller can
// close it: a failed read there would crash the process (the engine
// panics on it for a closed torrent).
func TestAClosedStorageLeavesTheTargetAlone(t *testing.T) {
	_, m, want := testImage(t)
	tor, err := FromManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	var places []Place
	var files []*os.File
	for i, p := range m.Partitions {
		f, err := os.Create(filepath.Join(t.TempDir(), p.Name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(want[i], 0); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		places = append(places, Place{Content: p.Content, Target: f, Have: func(int) bool { return true }})
	}
	st, err := newPieceStore(tor, places)
	if err != nil {
		t.Fatal(err)
	}
	ti, err := st.OpenTorrent(t.Context(), &tor.Info, tor.Hash)
	if err != nil {
		t.Fatal(err)
	}
	pc := ti.Piece(tor.Info.Piece(0))
	buf := make([]byte, 16<<10)
	if _, err := pc.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	if _, err := pc.ReadAt(buf, 0); err == nil {
		t.Fatal("a read of a closed file did not fail: the test proves nothing")
	}
	if err := ti.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.ReadAt(buf, 0); err != nil {
		t.Errorf("read after the storage closed: %v", err)
	}
	if _, err := pc.WriteAt(buf, 0); err != nil {
		t.Errorf("write after the storage closed: %v", err)
	}
}
