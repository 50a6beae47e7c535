package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
	"github.com/imprint-dev/imprint/identity"
	"github.com/imprint-dev/imprint/image"
)

// siteMemoryFile is where a node with a state partition keeps the newest
// site identity map it took, relative to the partition. Per disk, not per
// node: the map is the site's, and it can decide the node's name.
const siteMemoryFile = ".imprint/site-identity.json"

// siteRecord is the remembered map, with its signature: the map and the
// signed time in it are only believed after the signature verifies again
// under the agent's trusted keys, so the file is no more trusted than
// the network. One file, written atomically, so the map and its
// signature cannot come from two different writes.
type siteRecord struct {
	From      string `json:"from"`
	Map       []byte `json:"map"`
	Signature []byte `json:"signature"`
}

// errStaleSiteMap says a site's map is older than the newest the node
// has taken.
var errStaleSiteMap = errors.New("older than the newest this node has seen")

// chooseSite decides which identity map this boot uses, once the state
// partition (state, "" for none) is mounted: the site's map the network
// offered (a.offered), unless the node remembers a newer one. A map signed
// before the remembered one is refused (a replay: anyone on the network
// can hand out an old map whose signature still verifies); the remembered
// map is used instead, or the image's when it cannot be. A map as new or
// newer is taken and remembered. Without a state partition nothing is
// remembered and the offered map is taken, as before. Nil: the image's.
func (a *Agent) chooseSite(state string) *identity.Config {
	o := a.offered
	if o == nil {
		return nil
	}
	if state == "" {
		a.say("identity: site map %s replaces the image's (no state partition: not remembered, so an older map could be replayed)", o.from)
		return o.conf
	}
	file := filepath.Join(state, siteMemoryFile)
	kept, err := loadSiteMemory(file, o.trust)
	var usable error // why the remembered map cannot be used
	if errors.Is(err, image.ErrExpired) {
		usable, err = err, nil
	}
	if err != nil {
		a.say("identity: remembered site map %s: %v; not using it, it will be replaced", file, err)
		kept = nil
	}
	if kept != nil && o.signed.Before(kept.signed) {
		err := fmt.Errorf("%w (%s < %s)", errStaleSiteMap, signedText(o.signed), signedText(kept.signed))
		if usable != nil {
			a.say("identity: site map %s: %v; using the image's (the remembered one in %s: %v)", o.from, err, file, usable)
			return nil
		}
		a.say("identity: site map %s: %v; using the one remembered in %s (from %s)", o.from, err, file, kept.from)
		return kept.conf
	}
	if kept != nil && string(kept.raw) == string(o.raw) && string(kept.sig) == string(o.sig) {
		a.say("identity: site map %s replaces the image's (%s, the newest this node has seen)", o.from, signedText(o.signed))
		return o.conf
	}
	if err := saveSiteMemory(file, o); err != nil {
		a.say("identity: site map %s replaces the image's; remembering it: %v (an older map could be replayed at the next boot)", o.from, err)
		return o.conf
	}
	a.say("identity: site map %s replaces the image's (%s); remembered in %s as the newest this node has seen", o.from, signedText(o.signed), file)
	return o.conf
}

// loadSiteMemory reads the remembered map. Nil and no error: none. An
// error wrapping image.ErrExpired comes with the map: its signed time
// still counts, the map itself may not be used.
func loadSiteMemory(file string, trust *image.Trust) (*siteMap, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r siteRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("not a remembered map: %w", err)
	}
	if len(r.Map) == 0 || len(r.Signature) == 0 {
		return nil, errors.New("not a remembered map: no map or no signature in it")
	}
	m, err := verifySiteMap(r.From, r.Map, r.Signature, trust, "the remembered map")
	if errors.Is(err, image.ErrExpired) {
		st, serr := image.ReadFileStamps(r.Signature)
		if serr != nil {
			return nil, serr
		}
		// Its signature verified (VerifyFile checks the end last).
		return &siteMap{from: r.From, raw: r.Map, sig: r.Signature, signed: st.Signed, trust: trust}, err
	}
	return m, err
}

// saveSiteMemory remembers m as the newest map taken.
func saveSiteMemory(file string, m *siteMap) error {
	b, err := json.Marshal(siteRecord{From: m.from, Map: m.raw, Signature: m.sig})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return renameio.WriteFile(file, append(b, '\n'), 0o644)
}
