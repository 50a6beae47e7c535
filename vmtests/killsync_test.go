//go:build vmtest

package vmtests

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/internal/qemu"
	"github.com/imprint-dev/imprint/netboot"
)

// syncEvent is the part of a `--json` event line the kill points look at.
type syncEvent struct {
	Event   string `json:"event"`
	Phase   string `json:"phase"`
	Chunks  int    `json:"chunks"`
	Message string `json:"message"`
}

// runUntil runs the imprint binary and SIGKILLs it at the first event stop
// accepts (nil: let it finish, which it must); it returns the events seen
// and whether it killed the process.
func runUntil(t *testing.T, bin string, args []string, stop func(syncEvent) bool) ([]syncEvent, bool) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var evs []syncEvent
	killed := false
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e syncEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("bad event line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
		if stop != nil && stop(e) {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
			break
		}
	}
	err = cmd.Wait()
	if !killed && err != nil {
		t.Fatalf("imprint %s: %v", strings.Join(args, " "), err)
	}
	return evs, killed
}

// slowChunkServer serves store's chunks one at a time, each after d: the
// copier keeps many requests in flight, and a per-request delay alone
// would let them all wait at once.
func slowChunkServer(t *testing.T, store string, d time.Duration) string {
	t.Helper()
	h := &netboot.HTTP{Store: store, Decider: netboot.Static{}}
	var mu sync.Mutex
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/chunks/") {
			mu.Lock()
			time.Sleep(d)
			mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: slow}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// A sync killed with SIGKILL in the middle of writing the inactive slot,
// and again right after it put the new kernel on the ESP but before the
// new entry, leaves a disk that boots the old version from slot a (its
// menu and active slot unchanged, checked on the host first); a rerun then
// completes the sync and the disk boots the new version from slot b.
func TestKilledSyncBootsTheOldSlotAndRerunCompletes(t *testing.T) {
	requireQEMU(t)
	fx := buildFixture(t)
	store := filepath.Join(t.TempDir(), "store")
	const cmdline = "console=ttyS0 ro panic=1"
	// Small chunks and a v2 with 16M of fresh random data: hundreds of
	// chunks come from the slow server, so the kill lands mid-fetch.
	imprint(t, "build", "--store", store, "--name", "fixture", "--version", "1", "--rootfs", fx.RootfsDir, "--cmdline", cmdline,
		"--chunk-size", "64K", "--root-size", "128M")
	tree := filepath.Join(t.TempDir(), "tree")
	if b, err := exec.Command("cp", "-a", fx.RootfsDir, tree).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, b)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "imprint-test-release"), []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noise := make([]byte, 16<<20)
	rand.Read(noise)
	if err := os.WriteFile(filepath.Join(tree, "noise"), noise, 0o644); err != nil {
		t.Fatal(err)
	}
	imprint(t, "build", "--store", store, "--name", "fixture", "--version", "2", "--rootfs", tree, "--base", "fixture:1", "--cmdline", cmdline,
		"--chunk-size", "64K")

	bin := filepath.Join(t.TempDir(), "imprint")
	if out, err := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/imprint").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	url := slowChunkServer(t, store, 10*time.Millisecond)

	disk := filepath.Join(t.TempDir(), "disk.img")
	imprint(t, "deploy", "--from", store, "--image", "fixture:1", "--disk", disk, "--yes", "--boot-timeout", "0", "--size", "2G", "--slots", "2")
	rootA, rootB := partitionNamed(t, disk, "root-a"), partitionNamed(t, disk, "root-b")
	baseA := hashRange(t, disk, rootA.Start, rootA.Len)
	baseMenu, baseConf := string(espFile(t, disk, bootloader.MenuFile)), string(espFile(t, disk, bootloader.LoaderConf))

	args := []string{"sync", "--from", url, "--image", "fixture:2", "--disk", disk, "--json", "--checkpoint-interval", "30ms", "--tries", "2"}
	checkpoints := 0
	for _, k := range []struct {
		name string
		stop func(syncEvent) bool
	}{
		{"mid-fetch, third checkpoint", func(e syncEvent) bool {
			if e.Event == "checkpoint" && e.Chunks > 0 {
				checkpoints++
			}
			return checkpoints >= 3
		}},
		// The kernel is on the ESP; the initrd, the entry and the switch
		// are not.
		{"after the new kernel, before the entry", func(e syncEvent) bool { return e.Phase == "boot-file" && e.Message == "vmlinuz" }},
	} {
		evs, killed := runUntil(t, bin, args, k.stop)
		if !killed {
			t.Fatalf("killed %s: the sync finished first", k.name)
		}
		t.Logf("killed %s after %d events", k.name, len(evs))
		if hashRange(t, disk, rootA.Start, rootA.Len) != baseA {
			t.Fatalf("killed %s: the sync wrote slot a, the active one", k.name)
		}
		if m, c := string(espFile(t, disk, bootloader.MenuFile)), string(espFile(t, disk, bootloader.LoaderConf)); m != baseMenu || c != baseConf {
			t.Fatalf("killed %s: the menu changed:\n%s\n%s", k.name, m, c)
		}
		if next := nextSlot(t, disk); next.Slot != "a" || next.Version != "1" {
			t.Fatalf("killed %s: the loaders boot %+v next", k.name, next)
		}
		bootsSlot(t, qemu.UEFI, disk, rootA, "slot-a")
	}

	evs, _ := runUntil(t, bin, args, nil)
	if len(evs) == 0 || evs[len(evs)-1].Event != "result" {
		t.Fatalf("the rerun did not end with a result: %+v", evs)
	}
	bootsSlot(t, qemu.UEFI, disk, rootB, "slot-b")
	if next := nextSlot(t, disk); next.Slot != "b" || next.Version != "2" {
		t.Errorf("after the rerun the loaders boot %+v next", next)
	}
}

// nextSlot is the slot entry the loaders boot when nobody chooses.
func nextSlot(t *testing.T, disk string) bootloader.SlotState {
	t.Helper()
	for _, s := range slotStates(t, disk) {
		if s.Next {
			return s
		}
	}
	t.Fatalf("no slot entry is the default on %s", disk)
	return bootloader.SlotState{}
}
