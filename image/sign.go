package image

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

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

// Check verifies a resolved image against the trusted keys.
func (t *Trust) Check(r *Resolved) error {
	if t == nil {
		return nil
	}
	if err := t.Verify(r.Raw, r.Signature); err != nil {
		return fmt.Errorf("image %s:%s: %w", r.Manifest.Name, r.Manifest.Version, err)
	}
	return nil
}
