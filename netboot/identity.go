package netboot

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/imprint-dev/imprint/identity"
	"github.com/imprint-dev/imprint/image"
)

// maxIdentity bounds a site's identity map: agents read it into RAM.
const maxIdentity = 1 << 20

// LoadIdentity reads a site's identity map for serve --identity and the
// signature beside it (PATH.minisig, made by imprint key sign). The map
// must parse; with trust, its signature must verify under those keys (a
// server never hands out a map its own trust refuses). An unsigned map is
// served with a warning: agents ignore it and keep their image's own.
func LoadIdentity(path string, trust *image.Trust) (conf, sig []byte, warning string, err error) {
	conf, err = os.ReadFile(path)
	if err != nil {
		return nil, nil, "", fmt.Errorf("--identity: %w", err)
	}
	if len(conf) > maxIdentity {
		return nil, nil, "", fmt.Errorf("--identity %s: %d bytes; at most %d", path, len(conf), maxIdentity)
	}
	if _, err := identity.Parse(bytes.NewReader(conf), path); err != nil {
		return nil, nil, "", fmt.Errorf("--identity: %w", err)
	}
	sig, err = os.ReadFile(path + image.SignatureSuffix)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		sig = nil
		warning = fmt.Sprintf("--identity %s has no %s%s: agents ignore an unsigned map and keep their image's (sign it with imprint key sign --key KEY %s)",
			path, filepath.Base(path), image.SignatureSuffix, path)
	case err != nil:
		return nil, nil, "", fmt.Errorf("--identity: %w", err)
	}
	if trust != nil {
		// The signature first: a forged one is untrusted, not expired.
		if err := trust.VerifyFile(conf, sig, path); err != nil {
			return nil, nil, "", fmt.Errorf("--identity: %w; not serving it", err)
		}
	} else if sig != nil {
		// Agents refuse a map past its end: serving one would only make
		// every node fall back to its image's map. Without --trust the
		// end read here is unchecked, as the agents will check it.
		until, ok, err := image.FileValidUntil(sig)
		if err != nil {
			return nil, nil, "", fmt.Errorf("--identity: %s%s: %w", path, image.SignatureSuffix, err)
		}
		if ok && time.Now().After(until) {
			return nil, nil, "", fmt.Errorf("--identity: %s: %w: valid until %s; sign it again (imprint key sign --valid)", path, image.ErrExpired, until.Format(time.RFC3339))
		}
	}
	return conf, sig, warning, nil
}

// sayIfExpired logs, at most once a minute, that the identity map being
// handed out is past its signed end: serve checked it at start, but a
// server runs for longer than a map's validity, and its agents then keep
// their images' maps without a word here.
func (h *HTTP) sayIfExpired() {
	if h.IdentitySig == nil {
		return
	}
	until, ok, err := image.FileValidUntil(h.IdentitySig)
	now := time.Now()
	if err != nil || !ok || !now.After(until) {
		return
	}
	h.mu.Lock()
	say := now.Sub(h.expiredSaid) >= time.Minute
	if say {
		h.expiredSaid = now
	}
	h.mu.Unlock()
	if say {
		h.logf("identity: the site map handed out at %s is past its signed end (%s): agents refuse it and keep their image's map; sign it again (imprint key sign --valid) and restart serve",
			IdentityPath, until.Format(time.RFC3339))
	}
}
