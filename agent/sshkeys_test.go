package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/internal/testenv"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An image's /etc/ssh as Debian's openssh-server leaves it: the master's
// keys, which every node would share.
func imageSSH(t *testing.T, types ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "etc/ssh")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, typ := range types {
		priv, pub, err := newHostKey(typ, "master")
		if err != nil {
			t.Fatal(err)
		}
		if err := writeKeyPair(filepath.Join(dir, "ssh_host_"+typ+"_key"), priv, pub); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestHostKeyPlan(t *testing.T) {
	for _, tc := range []struct {
		image []string
		want  []string
	}{
		{nil, []string{"ecdsa", "ed25519"}},
		{[]string{"ed25519"}, []string{"ecdsa", "ed25519"}},
		{[]string{"rsa", "ecdsa", "ed25519"}, []string{"rsa", "ecdsa", "ed25519"}},
	} {
		if got := hostKeyPlan(imageSSH(t, tc.image...)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("image keys %v: plan %v, want %v", tc.image, got, tc.want)
		}
	}
}

// Keys are the node's own: the image's shared ones are replaced, ssh-keygen
// reads every private key and derives the public key written beside it,
// and with a state directory a second boot gets the same keys while
// another node gets different ones.
func TestHostKeysKeptPerNode(t *testing.T) {
	keygen := testenv.Tool(t, "ssh-keygen")
	state := t.TempDir()
	boot := func(node string) (string, map[string]string) {
		etc := imageSSH(t, "rsa", "ed25519")
		master := readFile(t, filepath.Join(etc, "ssh_host_ed25519_key"))
		made, kept, _, err := hostKeys(etc, sshKeyDir(state, node), node)
		if err != nil {
			t.Fatal(err)
		}
		keys := map[string]string{}
		for _, typ := range []string{"rsa", "ecdsa", "ed25519"} {
			p := filepath.Join(etc, "ssh_host_"+typ+"_key")
			keys[typ] = readFile(t, p)
			if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("%s: mode %v (%v), want 0600: sshd refuses a readable host key", p, st.Mode(), err)
			}
			out, err := exec.Command(keygen, "-y", "-f", p).CombinedOutput()
			if err != nil {
				t.Fatalf("ssh-keygen -y -f %s: %v\n%s", p, err, out)
			}
			pub := readFile(t, p+".pub")
			if !strings.HasPrefix(pub, strings.TrimSpace(string(out))+" ") || !strings.HasSuffix(pub, " root@"+node+"\n") {
				t.Fatalf("%s.pub = %q, ssh-keygen derives %q", p, pub, out)
			}
		}
		if keys["ed25519"] == master {
			t.Fatal("the image's ed25519 key was kept: every node would share it")
		}
		return strings.Join(made, " ") + "|" + strings.Join(kept, " "), keys
	}
	how, first := boot("node01")
	if how != "rsa ecdsa ed25519|" {
		t.Fatalf("first boot of node01: made|kept = %q", how)
	}
	how, again := boot("node01")
	if how != "|rsa ecdsa ed25519" || !reflect.DeepEqual(first, again) {
		t.Fatalf("second boot of node01: made|kept = %q, same keys %v", how, reflect.DeepEqual(first, again))
	}
	_, other := boot("gpu07")
	for typ := range first {
		if first[typ] == other[typ] {
			t.Errorf("node01 and gpu07 share their %s host key", typ)
		}
	}
}

// Without a state partition (diskless) every boot makes new keys.
func TestHostKeysVolatileWithoutState(t *testing.T) {
	var prev string
	for i := 0; i < 2; i++ {
		etc := imageSSH(t)
		made, kept, _, err := hostKeys(etc, "", "n1")
		if err != nil || strings.Join(made, " ") != "ecdsa ed25519" || len(kept) != 0 {
			t.Fatalf("made %v kept %v: %v", made, kept, err)
		}
		k := readFile(t, filepath.Join(etc, "ssh_host_ed25519_key"))
		if k == prev {
			t.Fatal("two diskless boots got the same key")
		}
		prev = k
	}
}

// A kept key whose public half does not match (a torn write) is made
// anew and kept, never handed to sshd, and the console says so.
func TestHostKeysReplaceMismatchedKeptPair(t *testing.T) {
	state := t.TempDir()
	keep := sshKeyDir(state, "n1")
	if _, _, _, err := hostKeys(imageSSH(t), keep, "n1"); err != nil {
		t.Fatal(err)
	}
	_, otherPub, err := newHostKey("ed25519", "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keep, "ssh_host_ed25519_key.pub"), otherPub, 0o644); err != nil {
		t.Fatal(err)
	}
	etc := imageSSH(t)
	made, kept, notes, err := hostKeys(etc, keep, "n1")
	if err != nil || strings.Join(made, " ") != "ed25519" || strings.Join(kept, " ") != "ecdsa" ||
		len(notes) != 1 || !strings.Contains(notes[0], "is not the public half") {
		t.Fatalf("made %v kept %v notes %q: %v", made, kept, notes, err)
	}
	if _, _, err := readKeyPair(filepath.Join(keep, "ssh_host_ed25519_key")); err != nil {
		t.Fatalf("the kept pair was not replaced: %v", err)
	}
	if readFile(t, filepath.Join(keep, "ssh_host_ed25519_key")) != readFile(t, filepath.Join(etc, "ssh_host_ed25519_key")) {
		t.Fatal("the node got another key than the one kept")
	}
}
