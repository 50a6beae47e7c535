package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/ondisk"
)

// TestInspectSaysWhatASignatureIsWorth and deploy never copies one that is
// malformed or of another manifest (without --trust), or one that does not
// verify (with it).
func TestInspectSaysWhatASignatureIsWorth(t *testing.T) {
	sec, pub := keys(t, "master")
	_, otherPub := keys(t, "other")
	ref := treeImage(t, "--sign", sec)
	sigFile := func(b built) string { return filepath.Join(b.store, "images/tree/v1/manifest.json.minisig") }
	// Another image's signature (a different tree, same key): well formed,
	// made by the trusted key, but of other bytes.
	foreign, _ := os.ReadFile(sigFile(treeImage(t, "--sign", sec)))
	// The image's own signature with one byte of its Ed25519 part changed.
	tamper := func(own []byte) []byte {
		lines := strings.Split(string(own), "\n")
		sl := []byte(lines[1])
		if sl[40] = 'A'; lines[1][40] == 'A' {
			sl[40] = 'B'
		}
		lines[1] = string(sl)
		return []byte(strings.Join(lines, "\n"))
	}
	same := func(b []byte) func([]byte) []byte { return func([]byte) []byte { return b } }

	for _, tc := range []struct {
		name            string
		sig             func(own []byte) []byte // nil: the store's own, untouched
		noTrust, trust  string                  // what inspect says without and with --trust
		deployNoTrust   bool                    // deploy without --trust copies the signature
		deployTrustFail bool
	}{
		{"valid", nil, "signed by ", "signed, verified by ", true, false},
		{"garbage", same([]byte("this is not a minisign signature\n")), "signature invalid: malformed", "signature invalid: malformed", false, true},
		{"another image's", same(foreign), "signature invalid: its trusted comment", "signature invalid: it does not verify under key", false, true},
		// Without a key a changed Ed25519 signature cannot be told from a
		// good one: it is called not verified, never verified.
		{"tampered", tamper, "not verified (no --trust)", "signature invalid: it does not verify under key", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := treeImage(t, "--sign", sec)
			if tc.sig != nil {
				own, _ := os.ReadFile(sigFile(b))
				if err := os.WriteFile(sigFile(b), tc.sig(own), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out := mustRun(t, "inspect", b.store, "--image", b.name)
			if !strings.Contains(out, tc.noTrust) {
				t.Errorf("inspect without --trust: want %q in\n%s", tc.noTrust, out)
			}
			out = mustRun(t, "inspect", b.store, "--image", b.name, "--trust", pub)
			if !strings.Contains(out, tc.trust) {
				t.Errorf("inspect --trust: want %q in\n%s", tc.trust, out)
			}
			if tc.name == "valid" {
				out = mustRun(t, "inspect", b.store, "--image", b.name, "--trust", otherPub)
				if !strings.Contains(out, "signature invalid: made by key") || !strings.Contains(out, "not among the 1 trusted key") {
					t.Errorf("inspect --trust OTHER: %s", out)
				}
			}

			dp := filepath.Join(t.TempDir(), "d.img")
			mustRun(t, "deploy", "--from", b.store, "--image", b.name, "--disk", dp, "--size", "100M", "--yes")
			onESP := espHas(t, dp, "/"+ondisk.SignatureFile)
			if onESP != tc.deployNoTrust {
				t.Errorf("deploy without --trust: signature on the disk %v, want %v", onESP, tc.deployNoTrust)
			}
			out = mustRun(t, "inspect", dp)
			if tc.deployNoTrust && !strings.Contains(out, "manifest signed by ") {
				t.Errorf("inspect of the disk: %s", out)
			}
			if !tc.deployNoTrust && !strings.Contains(out, "manifest not signed") {
				t.Errorf("inspect of the disk with no signature: %s", out)
			}
			code, _, errs := run(t, "deploy", "--from", b.store, "--image", b.name, "--disk", filepath.Join(t.TempDir(), "t.img"), "--size", "100M", "--yes", "--trust", pub)
			if (code != 0) != tc.deployTrustFail {
				t.Errorf("deploy --trust: exit %d\n%s", code, errs)
			}
		})
	}
	// A signature put onto a disk by hand is judged the same way.
	dp := filepath.Join(t.TempDir(), "d.img")
	mustRun(t, "deploy", "--from", ref.store, "--image", ref.name, "--disk", dp, "--size", "100M", "--yes")
	editESP(t, dp, func(f *disk.FAT) { f.WriteFile("/"+ondisk.SignatureFile, bytes.Repeat([]byte("x"), 40)) })
	if out := mustRun(t, "inspect", dp); !strings.Contains(out, "signature invalid: malformed") {
		t.Errorf("inspect of a disk with a garbage signature: %s", out)
	}
}

func espHas(t *testing.T, p, name string) bool {
	t.Helper()
	found := false
	editESP(t, p, func(f *disk.FAT) { found = f.Exists(name) })
	return found
}
