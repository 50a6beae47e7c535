package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/imprint-dev/imprint/image"
)

// A node with a state partition remembers the newest site map it took and
// refuses one signed before it (a replay), using the remembered map, or
// the image's when that one cannot be used; a map as new or newer is
// taken and remembered. A record that is broken or does not verify is
// named and replaced; without a state partition nothing is remembered.
func TestChooseSiteRefusesOlderMaps(t *testing.T) {
	dir := t.TempDir()
	pub, err := image.GenerateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.GenerateKey(filepath.Join(dir, "o")); err != nil {
		t.Fatal(err)
	}
	signer, _ := image.LoadSigner(filepath.Join(dir, "k.key"))
	otherSigner, _ := image.LoadSigner(filepath.Join(dir, "o.key"))
	trust, err := image.ParseTrust([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	t2 := t1.AddDate(0, 0, 7)
	const url = "http://10.0.0.1:8080/identity/identity.conf"
	compute := []byte("class gpu07 compute\n") // the map before gpu07 moved
	gpu := []byte("class gpu07 gpu\n")
	gpuA100 := []byte("class gpu07 gpu.a100\n")
	signed := func(raw []byte, st image.FileStamps) *siteMap {
		m, err := verifySiteMap(url, raw, signer.SignFileAt(raw, "identity.conf", st), trust, "the map")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	record := func(raw, sig []byte) []byte {
		b, _ := json.Marshal(siteRecord{From: "http://old/identity.conf", Map: raw, Signature: sig})
		return b
	}
	old := signed(compute, image.FileStamps{Signed: t1})
	newer := signed(gpu, image.FileStamps{Signed: t2})
	sameStamp := signed(gpuA100, image.FileStamps{Signed: t2})
	unstamped := signed(compute, image.FileStamps{})
	newerRec := record(gpu, newer.sig)
	expiredRec := record(gpu, signer.SignFileAt(gpu, "identity.conf", image.FileStamps{Signed: t2, Until: time.Now().Add(-time.Hour)}))
	// A newer agent's map, remembered before the node rolled back to an
	// older slot whose agent cannot parse it: its signed time still counts.
	unknown := []byte("frobnicate gpu07 gpu\n")
	unknownSig := signer.SignFileAt(unknown, "identity.conf", image.FileStamps{Signed: t2})
	unknownRec := record(unknown, unknownSig)
	unknownKept := &siteMap{raw: unknown, signed: t2}
	// A map a newer imprint signed with a stamp this one must not skip:
	// its signature verifies and its signed time still counts.
	criticalSig := signWithComment(t, filepath.Join(dir, "k.key"), gpu, fmt.Sprintf("imprint file identity.conf sha256 %x signed 2026-11-08T00:00:00Z !needs-agent 2027-01-01T00:00:00Z", sha256.Sum256(gpu)))
	criticalKept := &siteMap{raw: gpu, signed: t2}
	now := t2.AddDate(0, 0, 1)
	future := signed(gpuA100, image.FileStamps{Signed: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)})
	const file = "STATE/" + siteMemoryFile

	for _, tc := range []struct {
		name    string
		noState bool
		stored  []byte // the record before the boot; nil: none
		dirRec  bool   // a directory where the record goes
		offered *siteMap
		want    string // gpu07's class; "": the image's map
		says    string // "" = nothing
		kept    *siteMap
	}{
		{"first map, remembered", false, nil, false, old, "compute", "replaces the image's (signed 2026-11-01T00:00:00Z); remembered in " + file, old},
		{"newer taken and remembered", false, record(compute, old.sig), false, newer, "gpu", "replaces the image's (signed 2026-11-08T00:00:00Z); remembered in", newer},
		{"older refused, remembered used", false, newerRec, false, old,
			"gpu", "identity: site map " + url + ": older than the newest this node has seen (signed 2026-11-01T00:00:00Z < signed 2026-11-08T00:00:00Z); using the one remembered in " + file + " (recorded as from http://old/identity.conf)", newer},
		{"unstamped is older than stamped", false, newerRec, false, unstamped, "gpu", "(no signing time < signed 2026-11-08T00:00:00Z)", newer},
		{"same map again", false, newerRec, false, newer, "gpu", "replaces the image's (signed 2026-11-08T00:00:00Z, the newest this node has seen)", newer},
		{"same stamp, another map", false, newerRec, false, sameStamp, "gpu.a100", "remembered in", sameStamp},
		{"older refused, remembered expired", false, expiredRec, false, old, "", "older than the newest this node has seen (signed 2026-11-01T00:00:00Z < signed 2026-11-08T00:00:00Z); using the image's (the one remembered in " + file + " cannot be used: the remembered map: its signature's validity is over", nil},
		{"older refused, remembered signed but unreadable by this agent", false, unknownRec, false, old, "", "(signed 2026-11-01T00:00:00Z < signed 2026-11-08T00:00:00Z); using the image's (the one remembered in " + file + " cannot be used: its signature verifies, but this agent cannot read the map: bad identity configuration: " + file + " line 1: unknown directive", unknownKept},
		{"older refused, remembered with a stamp only a newer agent knows", false, record(gpu, criticalSig), false, old, "", "(signed 2026-11-01T00:00:00Z < signed 2026-11-08T00:00:00Z); using the image's (the one remembered in " + file + " cannot be used: the remembered map: its signature verifies, but trusted comment", criticalKept},
		{"newer replaces one unreadable by this agent", false, record(unknown, signer.SignFileAt(unknown, "identity.conf", image.FileStamps{Signed: t1})), false, newer, "gpu", "remembered in " + file + " as the newest", newer},
		{"signed far in the future: said, still taken", false, newerRec, false, future, "gpu.a100", "identity: site map " + url + " is signed 2099-01-01T00:00:00Z, more than a day after this machine's clock (2026-11-09T00:00:00Z)", future},
		{"remembered far in the future: said, still counts", false, record(gpuA100, future.sig), false, newer, "gpu.a100", "identity: the site map remembered in " + file + " is signed 2099-01-01T00:00:00Z, more than a day after", future},
		{"corrupt record", false, []byte("{\"map\": 12"), false, old, "compute", "identity: remembered site map " + file + ": not a remembered map: unexpected end of JSON input; not using it", old},
		{"empty record", false, []byte("{}"), false, old, "compute", file + ": not a remembered map: no map or no signature", old},
		{"record changed", false, record(gpu, signer.SignFileAt(compute, "identity.conf", image.FileStamps{Signed: t2})), false, old, "compute", file + ": the remembered map: not signed by a trusted key: signature by key", old},
		{"record by a key no longer trusted", false, record(gpu, otherSigner.SignFileAt(gpu, "identity.conf", image.FileStamps{Signed: t2})), false, old, "compute", "does not verify under the 1 trusted key(s); not using it", old},
		{"record unreadable", false, nil, true, old, "compute", "remembering it: ", nil},
		{"no state partition", true, nil, false, old, "compute", "replaces the image's (no state partition: not remembered", nil},
		{"state partition not mounted", true, nil, false, old, "compute", "replaces the image's (state partition not mounted: not remembered", nil},
		{"nothing offered", false, newerRec, false, nil, "", "", newer},
	} {
		state := t.TempDir()
		rec := filepath.Join(state, siteMemoryFile)
		if tc.stored != nil || tc.dirRec {
			if err := os.MkdirAll(filepath.Dir(rec), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if tc.stored != nil {
			if err := os.WriteFile(rec, tc.stored, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if tc.dirRec {
			if err := os.MkdirAll(filepath.Join(rec, "x"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		var out bytes.Buffer
		a := &Agent{Console: &out, offered: tc.offered, Clock: func() time.Time { return now }}
		st, why := state, ""
		if tc.noState {
			st, why = "", "no state partition"
			if strings.HasPrefix(tc.name, "state partition not mounted") {
				why = "state partition not mounted"
			}
		}
		c := a.chooseSite(st, why)
		console := strings.ReplaceAll(out.String(), state+"/", "STATE/")
		switch {
		case tc.want == "" && c != nil:
			t.Errorf("%s: took a site map, want the image's\n%s", tc.name, console)
		case tc.want != "" && c == nil:
			t.Errorf("%s: the image's map, want one giving gpu07 class %s\n%s", tc.name, tc.want, console)
		case c != nil:
			if class, _ := c.Class("gpu07"); class != tc.want {
				t.Errorf("%s: gpu07 is %q, want %q\n%s", tc.name, class, tc.want, console)
			}
		}
		if (tc.says == "") != (out.Len() == 0) || !strings.Contains(console, tc.says) {
			t.Errorf("%s: console %q, want %q", tc.name, console, tc.says)
		}
		got, _, err := loadSiteMemory(rec, trust)
		switch {
		case tc.kept == nil && tc.noState:
			if _, err := os.Stat(rec); err == nil {
				t.Errorf("%s: a record was written without a state partition", tc.name)
			}
		case tc.kept == nil:
		case err != nil || got == nil:
			t.Errorf("%s: remembered: %v %v", tc.name, got, err)
		case !bytes.Equal(got.raw, tc.kept.raw) || !got.signed.Equal(tc.kept.signed):
			t.Errorf("%s: remembered %q %s, want %q %s", tc.name, got.raw, signedText(got.signed), tc.kept.raw, signedText(tc.kept.signed))
		}
	}
}

// signWithComment signs raw with the unencrypted minisign key at path,
// with trusted as the trusted comment: a signature a newer imprint could
// make.
func signWithComment(t *testing.T, path string, raw []byte, trusted string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var k minisign.PrivateKey
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if err := k.UnmarshalText([]byte(lines[len(lines)-1])); err != nil {
		t.Fatal(err)
	}
	return minisign.SignWithComments(k, raw, trusted, "")
}

// A machine whose clock was never set (1970) does not warn about every
// stamp being ahead of it; one whose clock is set does.
func TestFutureStampIsNotSaidOnAnUnsetClock(t *testing.T) {
	signed := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		now  time.Time
		says bool
	}{
		{time.Unix(0, 0), false},
		{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{signed, false},
	} {
		var out bytes.Buffer
		a := &Agent{Console: &out, Clock: func() time.Time { return tc.now }}
		a.sayFutureStamp("site map u", signed)
		if got := strings.Contains(out.String(), "more than a day after"); got != tc.says {
			t.Errorf("clock %v: said %v (%q), want %v", tc.now, got, out.String(), tc.says)
		}
	}
}
