package agent

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
)

// A site's map replaces the image's only when its signature verifies under
// the agent's trusted keys; anything else keeps the image's and says why,
// and a server without a map is passed over quietly.
func TestSiteIdentityOnlyWhenSigned(t *testing.T) {
	dir := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := image.GenerateKey(filepath.Join(dir, "o"))
	signer, _ := image.LoadSigner(filepath.Join(dir, "k.key"))
	conf := []byte("class node[01-04] compute\nclass gpu07 gpu\n")
	good := signer.SignFile(conf, "identity.conf")

	var served, sig []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b []byte
		switch r.URL.Path {
		case "/identity/identity.conf":
			b = served
		case "/identity/identity.conf.minisig":
			b = sig
		}
		if b == nil {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	defer srv.Close()

	for _, tc := range []struct {
		name        string
		params      Params
		served, sig []byte
		want        bool   // the site map is taken
		says        string // on the console ("" = nothing)
	}{
		{"signed", Params{Sources: []string{srv.URL + "/"}, Trust: []string{pub}}, conf, good, true, "signature verified (signed "},
		{"unsigned", Params{Sources: []string{srv.URL + "/"}, Trust: []string{pub}}, conf, nil, false, "carries no signature; using the image's"},
		{"other key", Params{Sources: []string{srv.URL + "/"}, Trust: []string{other}}, conf, good, false, "does not verify"},
		{"changed", Params{Sources: []string{srv.URL + "/"}, Trust: []string{pub}}, append(conf, "class * gpu\n"...), good, false, "does not verify"},
		{"no trusted keys", Params{Sources: []string{srv.URL + "/"}}, conf, good, false, "no trusted keys"},
		{"none served", Params{Sources: []string{srv.URL + "/"}, Trust: []string{pub}}, nil, nil, false, ""},
		{"local without imprint.identity", Params{Mode: ModeLocal, Sources: []string{srv.URL + "/"}, Trust: []string{pub}}, conf, good, false, ""},
		{"local with imprint.identity", Params{Mode: ModeLocal, Identity: srv.URL + "/identity/identity.conf", Trust: []string{pub}}, conf, good, true, "signature verified"},
		{"expired", Params{Sources: []string{srv.URL + "/"}, Trust: []string{pub}}, conf, signer.SignFileUntil(conf, "identity.conf", time.Now().Add(-time.Minute)), false, "validity is over: valid until"},
		{"not yet expired", Params{Sources: []string{srv.URL + "/"}, Trust: []string{pub}}, conf, signer.SignFileUntil(conf, "identity.conf", time.Now().Add(time.Hour)), true, "signature verified"},
		{"named but missing", Params{Mode: ModeLocal, Identity: srv.URL + "/nothing.conf", Trust: []string{pub}}, conf, good, false, "no site identity map (404)"},
	} {
		served, sig = tc.served, tc.sig
		var out bytes.Buffer
		a := &Agent{Console: &out, Params: tc.params, Root: t.TempDir()}
		c := a.siteIdentity(context.Background())
		if (c != nil) != tc.want {
			t.Errorf("%s: took the site map %v, want %v\n%s", tc.name, c != nil, tc.want, out.String())
		}
		if c != nil {
			if class, _ := c.conf.Class("gpu07"); class != "gpu" {
				t.Errorf("%s: the site map says gpu07 is %q", tc.name, class)
			}
		}
		if (tc.says == "") != (out.Len() == 0) || !strings.Contains(out.String(), tc.says) {
			t.Errorf("%s: console %q, want %q", tc.name, out.String(), tc.says)
		}
	}
}

func TestParseCmdlineIdentityURL(t *testing.T) {
	p, err := ParseCmdline("root=PARTUUID=a imprint.mode=local imprint.identity=http://10.0.0.1:8080/identity/identity.conf imprint.node=dhcp")
	if err != nil || p.Identity != "http://10.0.0.1:8080/identity/identity.conf" || p.Node != NodeFromDHCP {
		t.Fatalf("%+v %v", p, err)
	}
}
