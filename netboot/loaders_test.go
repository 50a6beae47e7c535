package netboot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

// TestPXEClientsGetTheImagesIPXE: TFTP and HTTP send the served image's
// ipxe.efi (checked against its manifest); a loader the image lacks comes
// from the host's directory, and the log says so.
func TestPXEClientsGetTheImagesIPXE(t *testing.T) {
	root := t.TempDir()
	st, err := store.CreateDir(root)
	if err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) *image.Content {
		c, _, err := image.StoreContent(context.Background(), st, bytes.NewReader(b), int64(len(b)), 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	imageIPXE := []byte("MZ the image's iPXE")
	m := &image.Manifest{Format: image.FormatVersion, Name: "node", Version: "1", ChunkSize: 1 << 20,
		Partitions: []image.Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: put(make([]byte, 4096))}},
		Loaders:    map[string]*image.Content{image.LoaderIPXEEFI: put(imageIPXE)},
	}
	if _, err := st.PutManifest(m); err != nil {
		t.Fatal(err)
	}
	hostDir := t.TempDir()
	os.WriteFile(filepath.Join(hostDir, "ipxe.efi"), []byte("MZ the host's iPXE"), 0o644)
	os.WriteFile(filepath.Join(hostDir, "undionly.kpxe"), []byte("the host's undionly"), 0o644)
	var log strings.Builder
	s := &Server{HTTP: &HTTP{Store: root, Decider: Static{Default: Decision{Image: "node", Mode: Diskless}}}, IPXEDir: hostDir,
		Logf: func(f string, a ...any) { fmt.Fprintf(&log, f+"\n", a...) }}
	read := func(name string) string {
		t.Helper()
		r, err := s.tftpOpen(context.Background(), name, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c, ok := r.(io.Closer); ok {
			defer c.Close()
		}
		b, _ := io.ReadAll(r)
		return string(b)
	}
	if got := read("ipxe.efi"); got != string(imageIPXE) {
		t.Errorf("ipxe.efi = %q, want the image's", got)
	}
	if strings.Contains(log.String(), "carries no") {
		t.Errorf("fallback logged for a loader the image has:\n%s", log.String())
	}
	if got := read("undionly.kpxe"); got != "the host's undionly" {
		t.Errorf("undionly.kpxe = %q, want the host's", got)
	}
	if !strings.Contains(log.String(), `image "node" carries no undionly.kpxe: sending this host's`) {
		t.Errorf("no log line for the host fallback:\n%s", log.String())
	}
	if _, err := s.tftpOpen(context.Background(), "snponly.efi", nil); err == nil {
		t.Error("snponly.efi served: only the image's iPXE names are")
	}

	// A store whose ipxe.efi chunk was replaced is refused, not sent.
	c := m.Loaders[image.LoaderIPXEEFI].Chunks[0]
	if err := os.WriteFile(filepath.Join(root, "chunks", c[:2], c), image.RawFrame([]byte("MZ evil")), 0o644); err != nil {
		t.Fatal(err)
	}
	s.HTTP.chunks = newChunkCache(0) // forget the verified chunks
	if _, err := s.tftpOpen(context.Background(), "ipxe.efi", nil); err == nil {
		t.Error("a changed ipxe.efi chunk was sent")
	}
}
