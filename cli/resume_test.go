package cli

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/netboot"
)

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "imprint")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/imprint").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type event struct {
	Event  string `json:"event"`
	Phase  string `json:"phase"`
	Chunks int    `json:"chunks"`
	Plan   *struct {
		Resume bool `json:"resume"`
	} `json:"plan"`
	Result *struct {
		Written int64 `json:"bytes_written"`
		Skipped int64 `json:"bytes_resumed"`
	} `json:"result"`
}

// deployUntil runs a deploy in a child process and SIGKILLs it as soon as
// stop says so; it returns the events seen and whether it was killed.
func deployUntil(t *testing.T, bin string, args []string, stop func(event) bool) ([]event, bool) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var evs []event
	killed := false
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("bad event line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
		if stop != nil && stop(e) {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
			break
		}
	}
	err = cmd.Wait()
	if !killed && err != nil {
		t.Fatalf("deploy failed: %v", err)
	}
	return evs, killed
}

func TestDeployResumesAfterSIGKILL(t *testing.T) {
	need(t, "mkfs.ext4")
	bin := buildBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data.img")
	randomFile(t, data, 96<<20)
	b := buildImage(t, "--store", filepath.Join(dir, "store"), "--name", "big", "--partition", "root="+data, "--chunk-size", "256K")
	// A source that takes 3 ms a chunk keeps the write phase over ~300 ms
	// however fast the target is, so the kills below land mid-write.
	slow := httptestServer(t, slowChunks(&netboot.HTTP{Store: b.store, Decider: netboot.Static{}}, 3*time.Millisecond))

	checkpoints := func(n int) func(event) bool {
		seen := 0
		return func(e event) bool {
			if e.Event == "checkpoint" && e.Chunks > 0 {
				seen++
			}
			return seen >= n
		}
	}
	yes := true
	for _, tc := range []struct {
		name       string
		stop       func(event) bool
		wantResume *bool // nil: either, the kill raced the partitioning
	}{
		{"right after partitioning", func(e event) bool { return e.Phase == "partitioned" }, &yes},
		{"after the first checkpoint", checkpoints(1), &yes},
		{"after several checkpoints", checkpoints(4), &yes},
		{"during verification", func(e event) bool { return e.Phase == "verify" }, &yes},
		{"at the plan", func(e event) bool { return e.Event == "plan" }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.img")
			args := []string{"deploy", "--from", slow.URL, "--image", b.name, "--disk", disk, "--size", "1G", "--yes", "--json", "--checkpoint-interval", "30ms"}
			_, killed := deployUntil(t, bin, args, tc.stop)
			if !killed {
				t.Fatal("the deploy finished before it could be killed")
			}
			notComplete(t, disk)
			if tc.wantResume != nil {
				// The disk records a deploy that did not finish: verify calls
				// it incomplete (exit 3), never drifted.
				code, out, errs := run(t, "verify", "--disk", disk)
				if code != 3 || !strings.Contains(out, "incomplete") || strings.Contains(out, "DRIFTED") {
					t.Errorf("verify of the interrupted deploy: exit %d, want 3 and \"incomplete\"\n%s%s", code, out, errs)
				}
			}
			evs, _ := deployUntil(t, bin, args, nil)
			var resumed bool
			var res *event
			for i, e := range evs {
				if e.Plan != nil {
					resumed = e.Plan.Resume
				}
				if e.Result != nil {
					res = &evs[i]
				}
			}
			if tc.wantResume != nil && resumed != *tc.wantResume {
				t.Errorf("second run resumed=%v, want %v", resumed, *tc.wantResume)
			}
			if res == nil {
				t.Fatal("no result event")
			}
			if strings.Contains(tc.name, "checkpoint") && res.Result.Skipped == 0 {
				t.Errorf("killed %s, yet nothing was skipped on resume", tc.name)
			}
			if res.Result.Written+res.Result.Skipped != 96<<20 {
				t.Errorf("written %d + resumed %d != 96 MiB", res.Result.Written, res.Result.Skipped)
			}
			if code, out, _ := run(t, "verify", "--disk", disk); code != 0 {
				t.Fatalf("verify after resume: exit %d\n%s", code, out)
			}
			part, _ := onDisk(t, disk).State.Table.Find("root")
			if got := sha256Range(t, disk, part.Start, 96<<20); got != b.m.Partitions[0].Content.SHA256 {
				t.Fatal("resumed partition differs from the image")
			}
		})
	}
}

// slowChunks sends one chunk every d.
func slowChunks(h http.Handler, d time.Duration) http.Handler {
	// One chunk at a time: the copier keeps many requests in flight, and a
	// per-request delay alone would let them all wait at once.
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/chunks/") {
			mu.Lock()
			time.Sleep(d)
			mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}
