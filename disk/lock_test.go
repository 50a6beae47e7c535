package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestASecondWriterIsRefusedNamingTheFirst(t *testing.T) {
	first, p := newDiskFile(t, 8<<20)
	_, err := OpenDisk(p, OpenOptions{Write: true})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open for write: %v; want ErrLocked", err)
	}
	if want := fmt.Sprintf("pid %d", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name the holder (%s)", err, want)
	}
	if !strings.Contains(err.Error(), filepath.Base(os.Args[0])) {
		t.Fatalf("error %q does not give the holder's command line", err)
	}

	r, err := OpenDisk(p, OpenOptions{})
	if err != nil {
		t.Fatalf("a read-only open is blocked by a writer: %v", err)
	}
	r.Close()

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := OpenDisk(p, OpenOptions{Write: true})
	if err != nil {
		t.Fatalf("open after the holder closed: %v", err)
	}
	again.Close()
}

func TestAFailedCreateLeavesNoFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.img")
	// 16 TiB is past ext4's largest file (and 2^62 past every filesystem
	// Linux has), so the truncate fails after the file was created.
	_, err := OpenDisk(p, OpenOptions{Write: true, Create: true, Size: 1 << 62})
	if err == nil {
		t.Fatal("a 4 EiB image file was created")
	}
	if _, serr := os.Lstat(p); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("the failed create (%v) left %s behind (%v)", err, p, serr)
	}
}
