package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/testenv"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	imstore "github.com/imprint-dev/imprint/store"
)

// run executes the CLI in-process and returns exit code, stdout, stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, Stdio{In: strings.NewReader(""), Out: &out, Err: &errb})
	return code, out.String(), errb.String()
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := run(t, args...)
	if code != 0 {
		t.Fatalf("imprint %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	testenv.NeedTool(t, tools...)
}

func randomFile(t *testing.T, path string, n int) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeRootfs writes a small tree with the kinds of entries a root has.
func makeRootfs(t *testing.T, dir string, randomBytes int) {
	t.Helper()
	for _, d := range []string{"etc", "bin", "usr/share/doc", "var/log", "boot"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "etc/hostname"), []byte("node\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "usr/share/doc/README"), bytes.Repeat([]byte("imprint test data\n"), 20000), 0o644)
	randomFile(t, filepath.Join(dir, "bin/blob"), randomBytes)
	os.Symlink("../bin/blob", filepath.Join(dir, "etc/link"))
	os.WriteFile(filepath.Join(dir, "boot/vmlinuz-6.1.0-test"), []byte("not really a kernel"), 0o644)
	os.WriteFile(filepath.Join(dir, "boot/initrd.img-6.1.0-test"), []byte("not really an initrd"), 0o644)
	// Fixed times: the tree is what a package build would give.
	when := time.Unix(1700000000, 0)
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error {
		os.Chtimes(p, when, when)
		return nil
	})
	os.Lchown(filepath.Join(dir, "etc/link"), 0, 0)
}

func sha256Range(t *testing.T, path string, off, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func extractRange(t *testing.T, path string, off, n int64, out string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, err := io.Copy(o, io.NewSectionReader(f, off, n)); err != nil {
		t.Fatal(err)
	}
}

func flipBit(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	f.ReadAt(b, off)
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// onDisk reads imprint's record of a deployed disk.
func onDisk(t *testing.T, path string) *ondisk.OnDisk {
	t.Helper()
	d, err := disk.OpenDisk(path, disk.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	od, err := ondisk.ReadDisk(d)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return od
}

// notComplete asserts that a failed deploy left nothing that claims to be
// a complete deploy.
func notComplete(t *testing.T, path string) {
	t.Helper()
	d, err := disk.OpenDisk(path, disk.OpenOptions{})
	if err != nil {
		return // nothing was even created
	}
	defer d.Close()
	od, err := ondisk.ReadDisk(d)
	if err == nil && od.State.Status == ondisk.StatusComplete {
		t.Fatalf("%s is marked complete after a failed deploy", path)
	}
}

type built struct {
	store, name string
	id          string
	m           *image.Manifest
	lay         layout.Layout // the default layout the store holds beside the manifest
}

func buildImage(t *testing.T, args ...string) built {
	t.Helper()
	out := mustRun(t, append([]string{"build", "--json"}, args...)...)
	var res struct {
		ID, Name, Version string
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("build output %q: %v", out, err)
	}
	var store string
	for i, a := range args {
		if a == "--store" {
			store = args[i+1]
		}
	}
	st, err := imstore.OpenDir(store)
	if err != nil {
		t.Fatal(err)
	}
	r, err := imstore.Resolve(context.Background(), st, res.Name, res.Version)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != res.ID {
		t.Fatalf("build said id %s, the store has %s", res.ID, r.ID)
	}
	return built{store: store, name: res.Name + ":" + res.Version, id: res.ID, m: r.Manifest, lay: r.DefaultLayout()}
}
