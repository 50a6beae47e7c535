package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
)

// keys makes a key pair with imprint key generate.
func keys(t *testing.T, name string) (secret, public string) {
	t.Helper()
	prefix := filepath.Join(t.TempDir(), name)
	out := mustRun(t, "key", "generate", "--out", prefix)
	if !strings.Contains(out, "public key: RW") {
		t.Fatalf("key generate: %s", out)
	}
	st, err := os.Stat(prefix + ".key")
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret key file: %v %v", st.Mode(), err)
	}
	return prefix + ".key", prefix + ".pub"
}

func TestSignedImagesAndTrust(t *testing.T) {
	sec, pub := keys(t, "master")
	_, otherPub := keys(t, "other")
	if code, _, errs := run(t, "key", "generate", "--out", strings.TrimSuffix(sec, ".key")); code == 0 || !strings.Contains(errs, "already exists") {
		t.Fatalf("key generate over an existing key: exit %d %s", code, errs)
	}
	b := treeImage(t, "--sign", sec)
	manifest := filepath.Join(b.store, "images/tree/v1/manifest.json")

	// The signature is minisign's own format: the minisign tool checks it.
	_, err := exec.LookPath("minisign")
	if testenv.Optional(t, err == nil, "minisign is not installed (make deps installs it): interop not checked") {
		out, err := exec.Command("minisign", "-V", "-m", manifest, "-p", pub).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "imprint image tree:v1 id "+b.id) {
			t.Fatalf("minisign -V: %v\n%s", err, out)
		}
	}

	dir := t.TempDir()
	good := filepath.Join(dir, "good.img")
	out := mustRun(t, "deploy", "--from", b.store, "--image", b.name, "--disk", good, "--size", "100M", "--yes", "--trust", pub)
	if !strings.Contains(out, "signature verified") {
		t.Errorf("deploy --trust: %s", out)
	}
	// The key as text works as well as the file (the agent's form).
	keyText := strings.TrimSpace(lastLine(t, pub))
	mustRun(t, "deploy", "--from", b.store, "--image", b.name, "--disk", filepath.Join(dir, "text.img"), "--size", "100M", "--yes", "--trust", keyText)

	// A peer passes the signature on: deploy --trust from a served disk
	// and an export keep it valid.
	peer := serveDisk(t, good, nil)
	mustRun(t, "deploy", "--from", peer.URL, "--image", b.name, "--disk", filepath.Join(dir, "fromPeer.img"), "--size", "100M", "--yes", "--trust", pub)
	exported := filepath.Join(dir, "exported")
	mustRun(t, "export", "--disk", good, "--out", exported, "--trust", pub)
	mustRun(t, "deploy", "--from", exported, "--image", b.name, "--disk", filepath.Join(dir, "fromExport.img"), "--size", "100M", "--yes", "--trust", pub)

	unsigned := treeImage(t)
	tampered := treeImage(t, "--sign", sec)
	tm := filepath.Join(tampered.store, "images/tree/v1/manifest.json")
	raw, _ := os.ReadFile(tm)
	// Still a valid manifest, but not the bytes that were signed.
	os.WriteFile(tm, bytes.Replace(raw, []byte(`"console=ttyS0"`), []byte(`"console=ttyS0 init=/bin/sh"`), 1), 0o644)

	for _, tc := range []struct {
		name  string
		store string
		key   string
		want  string
	}{
		{"unsigned image", unsigned.store, pub, "carries no signature"},
		{"wrong key", b.store, otherPub, "does not verify"},
		{"tampered manifest", tampered.store, pub, "does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.img")
			code, _, errs := run(t, "deploy", "--from", tc.store, "--image", "tree:v1", "--disk", disk, "--size", "100M", "--yes", "--trust", tc.key)
			if code == 0 || !strings.Contains(errs, "not signed by a trusted key") || !strings.Contains(errs, tc.want) {
				t.Fatalf("deploy --trust: exit %d, %s", code, errs)
			}
			if _, err := os.Stat(disk); err == nil {
				t.Fatal("the refused deploy created the target")
			}
		})
	}

	// An existing disk is left as it was.
	before := fileSum(t, good)
	if code, _, _ := run(t, "deploy", "--from", unsigned.store, "--image", "tree:v1", "--disk", good, "--yes", "--trust", pub); code == 0 {
		t.Fatal("an unsigned image was deployed under --trust")
	}
	if fileSum(t, good) != before {
		t.Fatal("a refused deploy changed the disk")
	}

	// serve --disk and export refuse a disk whose image is not trusted.
	plain := filepath.Join(dir, "plain.img")
	mustRun(t, "deploy", "--from", unsigned.store, "--image", "tree:v1", "--disk", plain, "--size", "100M", "--yes")
	if out := mustRun(t, "inspect", good); !strings.Contains(out, "manifest signed") {
		t.Errorf("inspect of a signed disk:\n%s", out)
	}
	if out := mustRun(t, "inspect", plain); !strings.Contains(out, "manifest not signed") {
		t.Errorf("inspect of an unsigned disk:\n%s", out)
	}
	if code, _, errs := run(t, "serve", "--disk", plain, "--http", "127.0.0.1:0", "--public-url", "http://127.0.0.1/", "--trust", pub); code == 0 || !strings.Contains(errs, "not signed by a trusted key") {
		t.Fatalf("serve --disk --trust of an unsigned disk: exit %d %s", code, errs)
	}
	if code, _, errs := run(t, "export", "--disk", plain, "--out", filepath.Join(dir, "x"), "--trust", pub); code == 0 || !strings.Contains(errs, "nothing exported") {
		t.Fatalf("export --trust of an unsigned disk: exit %d %s", code, errs)
	}
}

// TestTrustOverALyingPeer: a peer that sends other content, and one that
// sends a forged manifest, change nothing under --trust.
func TestTrustOverALyingPeer(t *testing.T) {
	sec, pub := keys(t, "master")
	b := treeImage(t, "--sign", sec)
	forged := treeImage(t) // same name and version, other content, unsigned
	dir := t.TempDir()
	good := filepath.Join(dir, "good.img")
	deployTo(t, b, good, b.store)
	honest := serveDisk(t, good, nil)
	liar := httptestServer(t, lying(b.store, chunkPath(b, 1)))
	forger := httptestServer(t, lying(forged.store, chunkPath(forged, 1)))

	disk := filepath.Join(dir, "d.img")
	code, out, errs := run(t, "deploy", "--from", forger.URL, "--from", liar.URL, "--from", honest.URL, "--image", b.name, "--disk", disk, "--size", "100M", "--yes", "--trust", pub)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if rootSum(t, b, disk) != b.m.Partitions[0].Content.SHA256 || onDisk(t, disk).State.ImageID != b.id {
		t.Fatal("a lying peer changed the result")
	}
}

func lastLine(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	return l[len(l)-1]
}

func httptestServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}
