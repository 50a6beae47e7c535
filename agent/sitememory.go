package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

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
	// From is the URL the map came from: information only, not signed.
	From      string `json:"from"`
	Map       []byte `json:"map"`
	Signature []byte `json:"signature"`
}

// errStaleSiteMap says a site's map is older than the newest the node
// has taken.
var errStaleSiteMap = errors.New("older than the newest this node has seen")

// chooseSite decides which identity map this boot uses, once the state
// partition is mounted at state ("": none; why then says why, "no state
// partition" or "state partition not mounted"): the site's map the
// network offered (a.offered), unless the node remembers a newer one. A
// map signed before the remembered one is refused (a replay: anyone on
// the network can hand out an old map whose signature still verifies);
// the remembered map is used instead, or the image's when it cannot be. A
// map as new or newer is taken and remembered. Without a state partition
// nothing is remembered and the offered map is taken, as before. Nil: the
// image's.
func (a *Agent) chooseSite(state, why string) *identity.Config {
	o := a.offered
	if o == nil {
		return nil
	}
	a.sayFutureStamp("site map "+o.from, o.signed)
	if state == "" {
		a.say("identity: site map %s replaces the image's (%s: not remembered, so an older map could be replayed)", o.from, why)
		return o.conf
	}
	file := filepath.Join(state, siteMemoryFile)
	kept, unusable, err := loadSiteMemory(file, o.trust)
	if err != nil {
		a.say("identity: remembered site map %s: %v; not using it, it will be replaced", file, err)
	}
	if kept != nil {
		a.sayFutureStamp("the site map remembered in "+file, kept.signed)
	}
	if kept != nil && o.signed.Before(kept.signed) {
		err := fmt.Errorf("%w (%s < %s)", errStaleSiteMap, signedText(o.signed), signedText(kept.signed))
		if unusable != nil {
			a.say("identity: site map %s: %v; using the image's (the one remembered in %s cannot be used: %v)", o.from, err, file, unusable)
			return nil
		}
		a.say("identity: site map %s: %v; using the one remembered in %s (recorded as from %s)", o.from, err, file, kept.from)
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

// futureSlack is how far ahead of the agent's clock a signing time may be
// before the console says so: clocks differ, but a day is a wrong clock.
const futureSlack = 24 * time.Hour

// clockSetYear is the year before which this machine's clock is taken as
// never set (no RTC, no network time yet) rather than wrong.
const clockSetYear = 2024

// sayFutureStamp says when a map's signing time is far ahead of this
// machine's clock: a node that takes it refuses every map signed before
// it, so a signing host whose clock jumped ahead locks its nodes to that
// map. Signing times are still compared with each other (the node's own
// clock may be the wrong one).
func (a *Agent) sayFutureStamp(what string, signed time.Time) {
	// A machine without a battery-backed clock starts in 1970: every
	// stamp is ahead of that, and saying so would only be noise.
	if now := a.now(); now.Year() >= clockSetYear && signed.After(now.Add(futureSlack)) {
		a.say("identity: %s is %s, more than a day after this machine's clock (%s): if the signer's clock was wrong, nodes refuse every map signed before then; docs/identity.md says how to recover",
			what, signedText(signed), now.UTC().Format(time.RFC3339))
	}
}

// loadSiteMemory reads the remembered map. Nil and no error: none. A
// record whose signature verifies gives its map with its signed time,
// which counts even when the map cannot be used (unusable says why: its
// validity is over, or this agent cannot parse it, as after a rollback to
// an older agent): an older offered map is still refused. err says the
// record is not one, or its signature does not verify: it is replaced.
func loadSiteMemory(file string, trust *image.Trust) (m *siteMap, unusable, err error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var r siteRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, nil, fmt.Errorf("not a remembered map: %w", err)
	}
	if len(r.Map) == 0 || len(r.Signature) == 0 {
		return nil, nil, errors.New("not a remembered map: no map or no signature in it")
	}
	// The signature verified when the error is one of the stamps' (an
	// end that passed, or a stamp only a newer agent knows, as after a
	// rollback): the map is not used, but its signed time counts.
	st, err := trust.VerifyFileStamps(r.Map, r.Signature, "the remembered map")
	if errors.Is(err, image.ErrExpired) || errors.Is(err, image.ErrCriticalStamp) {
		unusable = err
	} else if err != nil {
		return nil, nil, err
	}
	m = &siteMap{from: r.From, raw: r.Map, sig: r.Signature, signed: st.Signed, trust: trust}
	if unusable != nil {
		return m, unusable, nil
	}
	if m.conf, err = identity.Parse(bytes.NewReader(r.Map), file); err != nil {
		return m, fmt.Errorf("its signature verifies, but this agent cannot read the map: %w", err), nil
	}
	return m, nil, nil
}

// saveSiteMemory remembers m as the newest map taken, durably: the
// record is renamed into place, then its directory and that one's parent
// (which MkdirAll may have just made it in) are synced.
func saveSiteMemory(file string, m *siteMap) error {
	b, err := json.Marshal(siteRecord{From: m.from, Map: m.raw, Signature: m.sig})
	if err != nil {
		return err
	}
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := renameio.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		return err
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func (a *Agent) now() time.Time {
	if a.Clock != nil {
		return a.Clock()
	}
	return time.Now()
}
