package image

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"aead.dev/minisign"
	"github.com/google/renameio/v2"
)

// Manifests are signed in minisign's format (https://jedisct1.github.io/minisign/):
// Ed25519, a file format that is documented and stable, and a tool in
// every distribution (`minisign -Vm manifest.json -p key.pub`) that checks
// an imprint signature without imprint. The signature sits beside the
// manifest as manifest.json.minisig, in stores and on deployed disks.

// SignatureSuffix is appended to a manifest's file name for its signature.
const SignatureSuffix = ".minisig"

// ErrUntrusted says a manifest is unsigned, or its signature does not verify
// under any trusted key. Nothing may be written from such an image.
var ErrUntrusted = errors.New("not signed by a trusted key")

// Key files written by GenerateKey.
const (
	PublicKeySuffix  = ".pub"
	PrivateKeySuffix = ".key"
)

// GenerateKey writes a new key pair as PREFIX.key (unencrypted minisign
// secret key, mode 0600) and PREFIX.pub, refusing to overwrite either.
func GenerateKey(prefix string) (pubText string, err error) {
	for _, p := range []string{prefix + PrivateKeySuffix, prefix + PublicKeySuffix} {
		if _, err := os.Lstat(p); err == nil {
			return "", fmt.Errorf("%s already exists; not overwriting a key", p)
		}
	}
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	privText, err := priv.MarshalText()
	if err != nil {
		return "", err
	}
	pubB, err := pub.MarshalText()
	if err != nil {
		return "", err
	}
	if dir := filepath.Dir(prefix); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
	}
	// Both texts are minisign's file forms, comment line included.
	if err := renameio.WriteFile(prefix+PrivateKeySuffix, append(privText, '\n'), 0o600); err != nil {
		return "", err
	}
	if err := renameio.WriteFile(prefix+PublicKeySuffix, append(pubB, '\n'), 0o644); err != nil {
		return "", err
	}
	return string(keyLine(pubB)), nil
}

// Signer signs manifests.
type Signer struct {
	key minisign.PrivateKey
}

// LoadSigner reads a secret key file written by GenerateKey or by
// `minisign -G -W` (unencrypted). Encrypted keys are refused with a hint:
// a build server cannot answer a password prompt.
func LoadSigner(path string) (*Signer, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if minisign.IsEncrypted(raw) {
		return nil, fmt.Errorf("signing key %s is password-protected; imprint needs an unencrypted key (imprint key generate, or minisign -G -W)", path)
	}
	var k minisign.PrivateKey
	if err := k.UnmarshalText(keyLine(raw)); err != nil {
		return nil, fmt.Errorf("signing key %s: not a minisign secret key: %v", path, err)
	}
	return &Signer{key: k}, nil
}

// keyLine drops minisign's "untrusted comment:" header line, which
// UnmarshalText does not take.
func keyLine(raw []byte) []byte {
	for _, l := range bytes.Split(raw, []byte("\n")) {
		l = bytes.TrimSpace(l)
		if len(l) > 0 && !bytes.HasPrefix(l, []byte("untrusted comment:")) {
			return l
		}
	}
	return nil
}

// Sign signs manifest bytes. The trusted comment names the image, so a
// human checking with the minisign tool sees what was signed.
func (s *Signer) Sign(raw []byte) ([]byte, error) {
	m, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	trusted := fmt.Sprintf("imprint image %s:%s id %s", m.Name, m.Version, ID(raw))
	return minisign.SignWithComments(s.key, raw, trusted, "signature from imprint"), nil
}

// SignFile signs any other file imprint hands out signed (a site's
// identity map); what names it in the trusted comment.
func (s *Signer) SignFile(raw []byte, what string) []byte {
	return s.SignFileUntil(raw, what, time.Time{})
}

// SignFileUntil is SignFile with an end: a non-zero until goes into the
// trusted comment ("valid-until" and RFC 3339), so the signature covers
// it, and VerifyFile refuses the file after it. Without an end, an older
// map signed by the same key verifies for ever: anyone on the network
// can hand it out again (a node moved to another class, back in its old
// one). An end bounds that replay to the validity the site chose. The
// time of signing goes in too (FileStamps.Signed).
func (s *Signer) SignFileUntil(raw []byte, what string, until time.Time) []byte {
	return s.SignFileAt(raw, what, FileStamps{Signed: time.Now(), Until: until})
}

// FileStamps are the times imprint's signer writes into a signed file's
// trusted comment, after its hash, where the signature covers them.
type FileStamps struct {
	// Signed is when the file was signed, to the second: a node that
	// remembers the newest map it took refuses one signed before it (a
	// replay). The signer's clock, not a counter, so signing needs no
	// state of its own. Zero: not written (signatures made before imprint
	// wrote it), older than any stamped one.
	Signed time.Time
	// Until is the end of the file's validity; zero: none.
	Until time.Time
}

// Words of a signed file's trusted comment that name its stamps.
const (
	signedAt   = "signed"
	validUntil = "valid-until"
)

// SignFileAt signs a file with the stamps given (zero ones are left out).
func (s *Signer) SignFileAt(raw []byte, what string, st FileStamps) []byte {
	sum := sha256.Sum256(raw)
	trusted := fmt.Sprintf("imprint file %s sha256 %x", what, sum)
	if !st.Signed.IsZero() {
		trusted += " " + signedAt + " " + st.Signed.UTC().Format(time.RFC3339)
	}
	if !st.Until.IsZero() {
		trusted += " " + validUntil + " " + st.Until.UTC().Format(time.RFC3339)
	}
	return minisign.SignWithComments(s.key, raw, trusted, "signature from imprint")
}

// ErrExpired says a signed file's validity (SignFileUntil) is over.
var ErrExpired = errors.New("its signature's validity is over")

// ErrCriticalStamp says a signed file carries a stamp this imprint does
// not know and must not skip (marked criticalMark): a newer imprint
// signed it. The signature itself verified, and the stamps this imprint
// knows are read.
var ErrCriticalStamp = errors.New("a stamp this imprint does not know and must not skip")

// VerifyFile checks a file's signature like Verify does a manifest's;
// what names the file in errors. A nil *Trust refuses: a file that
// replaces part of a signed image needs a key to be taken at all. A file
// signed with an end (SignFileUntil) is refused after it (ErrExpired).
func (t *Trust) VerifyFile(raw, sig []byte, what string) error {
	return t.VerifyFileAt(raw, sig, what, time.Now())
}

// VerifyFileAt is VerifyFile as of now.
func (t *Trust) VerifyFileAt(raw, sig []byte, what string, now time.Time) error {
	_, err := t.verifyFileStamps(raw, sig, what, now)
	return err
}

// VerifyFileStamps is VerifyFile that also gives the file's stamps. They
// are given with ErrExpired and ErrCriticalStamp too: the signature
// verified, so what they say is the signer's.
func (t *Trust) VerifyFileStamps(raw, sig []byte, what string) (FileStamps, error) {
	return t.verifyFileStamps(raw, sig, what, time.Now())
}

func (t *Trust) verifyFileStamps(raw, sig []byte, what string, now time.Time) (FileStamps, error) {
	if err := t.verifyFile(raw, sig, what); err != nil {
		return FileStamps{}, err
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return FileStamps{}, fmt.Errorf("%s: %w: the signature is malformed: %v", what, ErrUntrusted, err)
	}
	st, err := fileStamps(s.TrustedComment)
	if errors.Is(err, ErrCriticalStamp) {
		return st, fmt.Errorf("%s: its signature verifies, but %w", what, err)
	}
	if err != nil {
		return FileStamps{}, fmt.Errorf("%s: %w: %v", what, ErrUntrusted, err)
	}
	if !st.Until.IsZero() && now.After(st.Until) {
		return st, fmt.Errorf("%s: %w: valid until %s, and this machine's clock says %s", what, ErrExpired,
			st.Until.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return st, nil
}

// FileValidUntil reads the end of a signed file's validity from its
// signature (SignFileUntil), without checking it; ok is false when it has
// none. For a server to refuse to hand out a file its clients would.
func FileValidUntil(sig []byte) (until time.Time, ok bool, err error) {
	st, err := ReadFileStamps(sig)
	return st.Until, err == nil && !st.Until.IsZero(), err
}

// ReadFileStamps reads a signed file's stamps from its signature without
// checking the signature: check it first (VerifyFile) before trusting them.
// With ErrCriticalStamp the stamps this imprint knows are still read.
func ReadFileStamps(sig []byte) (FileStamps, error) {
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return FileStamps{}, fmt.Errorf("the signature is malformed: %w", err)
	}
	return fileStamps(s.TrustedComment)
}

// fileStamps reads a signed file's stamps from its trusted comment, where
// SignFileAt puts them: after "sha256 HEX", as pairs of a word and one
// value (a file's name may hold any word, "valid-until" too). A comment of
// another tool's has none. The stamps imprint knows (signed, valid-until)
// take an RFC 3339 time and are refused when malformed or given twice. A
// word it does not know is skipped with its value, so a later imprint can
// add a stamp without breaking every agent in the field; a stamp that
// must not be skipped (one an older agent should refuse the file for
// rather than ignore) begins with "!", and an unknown one is refused.
func fileStamps(trusted string) (FileStamps, error) {
	const sumWord = " sha256 "
	var st FileStamps
	i := strings.LastIndex(trusted, sumWord)
	if !strings.HasPrefix(trusted, "imprint file ") || i < 0 {
		return st, nil
	}
	tail := strings.Fields(trusted[i+len(sumWord):])
	var critical error
	if len(tail)%2 != 1 {
		return FileStamps{}, fmt.Errorf("trusted comment %q: want \"sha256 HEX\" then pairs of a word (%s, %s, ...) and its value at its end", trusted, signedAt, validUntil)
	}
	for j := 1; j < len(tail); j += 2 {
		var dst *time.Time
		switch w := tail[j]; {
		case w == signedAt:
			dst = &st.Signed
		case w == validUntil:
			dst = &st.Until
		case strings.HasPrefix(w, criticalMark):
			// Read on: what this imprint knows still counts (a node
			// that rolled back keeps a newer map's signing time).
			if critical == nil {
				critical = fmt.Errorf("trusted comment %q: %q: %w, marked %q (a newer imprint signed it)", trusted, w, ErrCriticalStamp, criticalMark)
			}
			continue
		default:
			continue // a newer imprint's stamp, safe to skip
		}
		if !dst.IsZero() {
			return FileStamps{}, fmt.Errorf("trusted comment %q: %s given twice", trusted, tail[j])
		}
		t, err := time.Parse(time.RFC3339, tail[j+1])
		if err != nil {
			return FileStamps{}, fmt.Errorf("trusted comment %q: %s: %w", trusted, tail[j], err)
		}
		*dst = t
	}
	return st, critical
}

// criticalMark begins a stamp word an agent that does not know it must
// refuse the file for.
const criticalMark = "!"

func (t *Trust) verifyFile(raw, sig []byte, what string) error {
	if t == nil {
		return fmt.Errorf("%s: %w: no trusted keys to check it with", what, ErrUntrusted)
	}
	if len(sig) == 0 {
		return fmt.Errorf("%s: %w: it carries no signature", what, ErrUntrusted)
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return fmt.Errorf("%s: %w: the signature is malformed: %v", what, ErrUntrusted, err)
	}
	for _, k := range t.keys {
		if minisign.Verify(k, raw, sig) {
			return nil
		}
	}
	return fmt.Errorf("%s: %w: signature by key %X does not verify under the %d trusted key(s)", what, ErrUntrusted, s.KeyID, len(t.keys))
}

// Trust is the set of public keys an image must be signed by. A nil *Trust
// trusts every manifest (no --trust given).
type Trust struct {
	keys []minisign.PublicKey
}

// ParseTrust takes public keys each given as a file (minisign .pub) or as
// the base64 key itself (as on a kernel command line).
func ParseTrust(specs []string) (*Trust, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	t := &Trust{}
	for _, s := range specs {
		text := []byte(s)
		// A base64 key may contain '/', so a path that does not exist is
		// tried as a key before it is called missing.
		if b, err := os.ReadFile(s); err == nil {
			text = keyLine(b)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("trusted key %s: %w", s, err)
		}
		var k minisign.PublicKey
		if err := k.UnmarshalText(text); err != nil {
			return nil, fmt.Errorf("trusted key %q: neither a readable file nor a minisign public key: %v", s, err)
		}
		t.keys = append(t.keys, k)
	}
	return t, nil
}

// PublicKeyText gives a key, named as a file or as key text, as its
// canonical key text (what a kernel command line carries).
func PublicKeyText(spec string) (string, error) {
	t, err := ParseTrust([]string{spec})
	if err != nil {
		return "", err
	}
	b, err := t.keys[0].MarshalText()
	return string(keyLine(b)), err
}

// Verify checks a manifest's signature. It fails with ErrUntrusted when
// the signature is missing, malformed or made by a key not in the set.
func (t *Trust) Verify(raw, sig []byte) error {
	if t == nil {
		return nil
	}
	if len(sig) == 0 {
		return fmt.Errorf("image id %s: %w: the manifest carries no signature", ID(raw), ErrUntrusted)
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return fmt.Errorf("image id %s: %w: the signature is malformed: %v", ID(raw), ErrUntrusted, err)
	}
	for _, k := range t.keys {
		if minisign.Verify(k, raw, sig) {
			return nil
		}
	}
	return fmt.Errorf("image id %s: %w: signature by key %X does not verify under the %d trusted key(s)", ID(raw), ErrUntrusted, s.KeyID, len(t.keys))
}

// Check verifies a resolved image against the trusted keys, and records
// the key it verified under in r.VerifiedBy.
func (t *Trust) Check(r *Resolved) error {
	if t == nil {
		return nil
	}
	st := t.Examine(r.Raw, r.Signature)
	if !st.Verified {
		if err := t.Verify(r.Raw, r.Signature); err != nil {
			return fmt.Errorf("image %s:%s: %w", r.Manifest.Name, r.Manifest.Version, err)
		}
	}
	r.VerifiedBy = st.KeyID
	return nil
}

// SignatureStatus is what can be told of a manifest's signature.
type SignatureStatus struct {
	Signed bool `json:"signed"` // a signature file is there
	// Verified says it verifies under a trusted key (KeyID).
	Verified bool `json:"verified"`
	// Checked says keys were given to verify it with (--trust).
	Checked bool `json:"checked"`
	// KeyID is the key the signature names, in minisign's hex form.
	KeyID string `json:"key_id,omitempty"`
	// Problem says why the signature is invalid or not trusted; "" for a
	// signature that holds as far as could be checked.
	Problem string `json:"problem,omitempty"`
}

// String says it as inspect shows it.
func (s SignatureStatus) String() string {
	switch {
	case !s.Signed:
		return "not signed"
	case s.Problem != "":
		return "signature invalid: " + s.Problem
	case s.Verified:
		return "signed, verified by " + s.KeyID
	default:
		return "signed by " + s.KeyID + ", not verified (no --trust)"
	}
}

// Examine says what can be told of sig as the signature of the manifest
// raw. With keys (t non-nil) it is verified. Without, only its form can be
// checked (an Ed25519 signature cannot be checked without the public key):
// a well-formed minisign signature whose trusted comment names this image
// id, as imprint's signer writes it; anything else is invalid.
func (t *Trust) Examine(raw, sig []byte) SignatureStatus {
	st := SignatureStatus{Signed: len(sig) > 0, Checked: t != nil}
	if !st.Signed {
		return st
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		st.Problem = fmt.Sprintf("malformed: %v", err)
		return st
	}
	st.KeyID = fmt.Sprintf("%016X", s.KeyID)
	if t != nil {
		known := false
		for _, k := range t.keys {
			if minisign.Verify(k, raw, sig) {
				st.Verified = true
				st.KeyID = fmt.Sprintf("%016X", k.ID())
				return st
			}
			known = known || k.ID() == s.KeyID
		}
		if known {
			st.Problem = "it does not verify under key " + st.KeyID + ": the manifest or the signature was changed"
		} else {
			st.Problem = fmt.Sprintf("made by key %s, which is not among the %d trusted key(s)", st.KeyID, len(t.keys))
		}
		return st
	}
	if id := ID(raw); !strings.Contains(s.TrustedComment, "id "+id) {
		st.Problem = fmt.Sprintf("its trusted comment %q does not name this manifest (image id %s)", s.TrustedComment, id)
	}
	return st
}

// SignatureToKeep is the signature a deployed disk or an exported store
// may carry on: one that verified under a trusted key (Trust.Check), else
// one that holds as far as can be told without a key (Examine). A
// malformed signature, or one of another manifest, is never passed on.
func (r *Resolved) SignatureToKeep() []byte {
	if len(r.Signature) == 0 {
		return nil
	}
	if r.VerifiedBy != "" {
		return r.Signature
	}
	if (*Trust)(nil).Examine(r.Raw, r.Signature).Problem == "" {
		return r.Signature
	}
	return nil
}
