package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/imprint-dev/imprint/identity"
	"github.com/imprint-dev/imprint/image"
)

// siteIdentityPath is where imprint serve --identity hands out a site's
// identity map, relative to a source URL (netboot.IdentityPath).
const siteIdentityPath = "identity/identity.conf"

// maxSiteIdentity bounds what the agent reads of a site's map.
const maxSiteIdentity = 1 << 20

// errNoSiteMap says the server has no site identity map (404): the
// image's own is used, with no complaint.
var errNoSiteMap = errors.New("no site identity map")

// siteIdentityURLs are where this boot looks for a site's identity map:
// imprint.identity=URL, else (diskless) identity/identity.conf under each
// HTTP source. A local boot looks only when the command line names a URL.
func (a *Agent) siteIdentityURLs() []string {
	if a.Params.Identity != "" {
		return []string{a.Params.Identity}
	}
	if a.Params.Mode == ModeLocal {
		return nil
	}
	var out []string
	for _, s := range a.Params.Sources {
		if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
			out = append(out, strings.TrimRight(s, "/")+"/"+siteIdentityPath)
		}
	}
	return out
}

// siteMap is a site's identity map whose signature verified under the
// agent's trusted keys.
type siteMap struct {
	from     string // the URL it came from
	raw, sig []byte
	conf     *identity.Config
	// signed is when it was signed (image.FileStamps.Signed); zero for a
	// signature without the stamp, older than any stamped one.
	signed time.Time
	trust  *image.Trust // what it verified under
}

// siteIdentity fetches a site's identity map and its signature and returns
// the map when the signature verifies under the agent's trusted keys.
// Anything else (none served, unsigned, a bad signature, no trusted keys,
// a map that does not parse) gives nil: the image's own map is used, and
// the console says why. It never fails the boot. Whether the map is taken
// is decided once the state partition is mounted (chooseSite): a node
// that remembers a newer one refuses it.
func (a *Agent) siteIdentity(ctx context.Context) *siteMap {
	urls := a.siteIdentityURLs()
	if len(urls) == 0 {
		return nil
	}
	trust, err := a.trust()
	if err != nil {
		a.say("identity: site map: %v; using the image's", err)
		return nil
	}
	for _, u := range urls {
		m, err := fetchSiteIdentity(ctx, u, trust)
		switch {
		case err == nil:
			a.say("identity: site map %s, signature verified (%s)", u, signedText(m.signed))
			return m
		case errors.Is(err, errNoSiteMap) && a.Params.Identity == "":
			// A server without --identity: nothing to say.
		default:
			a.say("identity: site map %s: %v; using the image's", u, err)
			return nil
		}
	}
	return nil
}

func fetchSiteIdentity(ctx context.Context, url string, trust *image.Trust) (*siteMap, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conf, err := httpGet(ctx, url)
	if err != nil {
		return nil, err
	}
	sig, err := httpGet(ctx, url+image.SignatureSuffix)
	if errors.Is(err, errNoSiteMap) {
		sig, err = nil, nil // VerifyFile names the missing signature
	}
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	return verifySiteMap(url, conf, sig, trust, "the map")
}

// verifySiteMap checks a map's signature (and its end) and parses it;
// what names it in errors.
func verifySiteMap(from string, raw, sig []byte, trust *image.Trust, what string) (*siteMap, error) {
	st, err := trust.VerifyFileStamps(raw, sig, what)
	if err != nil {
		return nil, err
	}
	c, err := identity.Parse(bytes.NewReader(raw), from)
	if err != nil {
		return nil, err
	}
	return &siteMap{from: from, raw: raw, sig: sig, conf: c, signed: st.Signed, trust: trust}, nil
}

// signedText says when a map was signed.
func signedText(t time.Time) string {
	if t.IsZero() {
		return "no signing time"
	}
	return "signed " + t.UTC().Format(time.RFC3339)
}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%s: %w (404)", url, errNoSiteMap)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxSiteIdentity+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSiteIdentity {
		return nil, fmt.Errorf("%s: more than %d bytes", url, maxSiteIdentity)
	}
	return b, nil
}
