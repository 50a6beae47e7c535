package image

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/imprint-dev/imprint/internal/testenv"
)

func TestSignFileVerifies(t *testing.T) {
	dir := t.TempDir()
	pub, err := GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateKey(filepath.Join(dir, "o"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	conf := []byte("class node[01-64] compute\n")
	sig := s.SignFile(conf, "identity.conf")
	if !strings.Contains(string(sig), "trusted comment: imprint file identity.conf sha256 ") {
		t.Fatalf("signature does not name the file:\n%s", sig)
	}
	good, _ := ParseTrust([]string{pub})
	wrong, _ := ParseTrust([]string{other})
	if err := good.VerifyFile(conf, sig, "identity.conf"); err != nil {
		t.Fatal(err)
	}
	// The minisign tool checks it too: a site can verify by hand.
	f := filepath.Join(dir, "identity.conf")
	if err := os.WriteFile(f, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f+SignatureSuffix, sig, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(testenv.Tool(t, "minisign"), "-Vm", f, "-p", filepath.Join(dir, "k.pub")).CombinedOutput(); err != nil {
		t.Fatalf("minisign -V: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name  string
		trust *Trust
		raw   []byte
		sig   []byte
		want  string
	}{
		{"no keys", nil, conf, sig, "no trusted keys"},
		{"unsigned", good, conf, nil, "carries no signature"},
		{"malformed", good, conf, []byte("junk"), "malformed"},
		{"other key", wrong, conf, sig, "does not verify under the 1 trusted key"},
		{"changed file", good, append([]byte("class * gpu\n"), conf...), sig, "does not verify"},
	} {
		err := tc.trust.VerifyFile(tc.raw, tc.sig, "identity.conf")
		if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "identity.conf: ") {
			t.Errorf("%s: %v, want ErrUntrusted saying %q", tc.name, err, tc.want)
		}
	}
}

// A file signed with an end verifies until then and is refused after it
// (ErrExpired, naming both times); the end is in the signed trusted
// comment, so moving it breaks the signature; a file signed without one
// never expires.
func TestSignFileUntilExpires(t *testing.T) {
	dir := t.TempDir()
	pub, err := GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := ParseTrust([]string{pub})
	conf := []byte("class node[01-64] compute\n")
	until := time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC)
	sig := s.SignFileUntil(conf, "identity.conf", until)
	if !strings.Contains(string(sig), "valid-until 2026-12-31T00:00:00Z") {
		t.Fatalf("the end is not in the trusted comment:\n%s", sig)
	}
	moved := []byte(strings.Replace(string(sig), "2026-12-31", "2099-12-31", 1))
	for _, tc := range []struct {
		name string
		sig  []byte
		now  time.Time
		want error // nil: verifies
		says string
	}{
		{"before its end", sig, until.Add(-time.Hour), nil, ""},
		{"at its end", sig, until, nil, ""},
		{"after its end", sig, until.Add(time.Second), ErrExpired, "valid until 2026-12-31T00:00:00Z, and this machine's clock says 2026-12-31T00:00:01Z"},
		{"end moved", moved, until.Add(time.Hour), ErrUntrusted, "does not verify"},
		{"no end", s.SignFile(conf, "identity.conf"), until.AddDate(100, 0, 0), nil, ""},
		{"a name holding the word, no end", s.SignFile(conf, "x valid-until 2001-01-01T00:00:00Z"), until, nil, ""},
		{"a name holding the word, an end", s.SignFileUntil(conf, "x valid-until 2099-01-01T00:00:00Z", until), until.Add(time.Second), ErrExpired, "valid until 2026-12-31T00:00:00Z"},
	} {
		err := trust.VerifyFileAt(conf, tc.sig, "identity.conf", tc.now)
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != nil && (!errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says)):
			t.Errorf("%s: %v, want %v saying %q", tc.name, err, tc.want, tc.says)
		}
	}
}

// A signed file carries the time it was signed beside its end, both under
// the signature; a signature without them (made before imprint wrote
// them, or by another tool) has zero stamps. A stamp imprint knows that is
// malformed or given twice is refused; an unknown one is skipped (a newer
// imprint's) unless it is marked "!" as one not to skip.
func TestFileStamps(t *testing.T) {
	dir := t.TempDir()
	if _, err := GenerateKey(filepath.Join(dir, "k")); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	conf := []byte("class node[01-64] compute\n")
	signed := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	until := signed.AddDate(0, 0, 30)
	const hex = "sha256 0123456789abcdef"
	for _, tc := range []struct {
		name    string
		trusted string // parsed by fileStamps when sig is nil
		sig     []byte
		want    FileStamps
		err     string
	}{
		{"both", "", s.SignFileAt(conf, "identity.conf", FileStamps{Signed: signed, Until: until}), FileStamps{Signed: signed, Until: until}, ""},
		{"signed only", "", s.SignFileAt(conf, "identity.conf", FileStamps{Signed: signed}), FileStamps{Signed: signed}, ""},
		{"until only (before imprint wrote the signing time)", "", s.SignFileAt(conf, "identity.conf", FileStamps{Until: until}), FileStamps{Until: until}, ""},
		{"none", "", s.SignFileAt(conf, "identity.conf", FileStamps{}), FileStamps{}, ""},
		{"a name holding the word", "", s.SignFileAt(conf, "x signed 2001-01-01T00:00:00Z", FileStamps{Signed: signed}), FileStamps{Signed: signed}, ""},
		{"another tool's comment", "timestamp:1700000000 file:identity.conf", nil, FileStamps{}, ""},
		{"a word imprint does not know is skipped", "imprint file f " + hex + " signed 2026-01-01T00:00:00Z not-before 2026-01-01T00:00:00Z key-epoch 7", nil, FileStamps{Signed: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, ""},
		{"an unknown word marked as not to skip", "imprint file f " + hex + " !not-before 2026-01-01T00:00:00Z", nil, FileStamps{}, `"!not-before": a stamp this imprint does not know and must not skip, marked "!"`},
		{"the stamps imprint knows are read beside one not to skip", "imprint file f " + hex + " signed 2026-01-01T00:00:00Z !not-before 2026-01-01T00:00:00Z", nil, FileStamps{Signed: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, `"!not-before"`},
		{"given twice", "imprint file f " + hex + " signed 2026-01-01T00:00:00Z signed 2027-01-01T00:00:00Z", nil, FileStamps{}, "signed given twice"},
		{"not a time", "imprint file f " + hex + " signed yesterday", nil, FileStamps{}, "signed: parsing time"},
		{"a word without a time", "imprint file f " + hex + " signed", nil, FileStamps{}, "want \"sha256 HEX\" then pairs"},
		{"an unknown word without a value", "imprint file f " + hex + " signed 2026-01-01T00:00:00Z later", nil, FileStamps{}, "want \"sha256 HEX\" then pairs"},
	} {
		var got FileStamps
		var err error
		if tc.sig != nil {
			got, err = ReadFileStamps(tc.sig)
		} else {
			got, err = fileStamps(tc.trusted)
		}
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one saying %q", tc.name, err, tc.err)
		case strings.Contains(tc.err, `"!`) && !errors.Is(err, ErrCriticalStamp):
			t.Errorf("%s: %v is not ErrCriticalStamp", tc.name, err)
		case !got.Signed.Equal(tc.want.Signed) || !got.Until.Equal(tc.want.Until):
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if st, err := ReadFileStamps(s.SignFile(conf, "identity.conf")); err != nil || time.Since(st.Signed) > time.Minute || !st.Until.IsZero() {
		t.Errorf("SignFile writes no signing time of now: %+v %v", st, err)
	}
}

// The signing time is under the signature: a signed file whose stamp is
// edited (to pass a replayed map off as new) no longer verifies, while a
// stamp a newer imprint adds verifies and is skipped.
func TestSignedStampIsSigned(t *testing.T) {
	dir := t.TempDir()
	pub, err := GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	trust, _ := ParseTrust([]string{pub})
	conf := []byte("class node[01-64] compute\n")
	signed := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	sig := s.SignFileAt(conf, "identity.conf", FileStamps{Signed: signed})
	if err := trust.VerifyFile(conf, sig, "the map"); err != nil {
		t.Fatal(err)
	}
	edited := []byte(strings.Replace(string(sig), "signed 2026-11-01", "signed 2026-12-01", 1))
	if string(edited) == string(sig) {
		t.Fatalf("no signing time to edit in:\n%s", sig)
	}
	if err := trust.VerifyFile(conf, edited, "the map"); !errors.Is(err, ErrUntrusted) {
		t.Errorf("a signature with its signing time edited: %v, want %v", err, ErrUntrusted)
	}
	newer := minisign.SignWithComments(s.key, conf, fmt.Sprintf("imprint file identity.conf sha256 %x signed 2026-11-01T00:00:00Z key-epoch 7", sha256.Sum256(conf)), "")
	if err := trust.VerifyFile(conf, newer, "the map"); err != nil {
		t.Errorf("a stamp a newer imprint adds: %v", err)
	}
	if st, err := ReadFileStamps(newer); err != nil || !st.Signed.Equal(signed) {
		t.Errorf("a stamp a newer imprint adds: %+v %v", st, err)
	}
}
