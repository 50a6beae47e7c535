package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// ErrNotVersion says a tag (or the describe output around it) cannot become
// a Debian version.
var ErrNotVersion = errors.New("not a version")

var (
	// what git describe appends after the tag: -<commits since>-g<hash>
	describeSuffix = regexp.MustCompile(`^(.*)-([0-9]+)-g([0-9a-f]{4,40})$`)
	bareHash       = regexp.MustCompile(`^[0-9a-f]{4,40}$`)
	// Debian policy 5.6.12 upstream_version without a revision: starts with
	// a digit; letters, digits and . + ~ (no hyphen: there is no revision).
	debUpstream = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
)

// debVersion maps `git describe --tags --always --dirty` output to a Debian
// version that sorts the way the history goes:
//
//	7898c9e                  -> 0.0~git20261126002252.7898c9e
//	v1.2.0                   -> 1.2.0
//	v1.2.0-rc1               -> 1.2.0~rc1   (before 1.2.0)
//	v1.2.0-3-g7898c9e        -> 1.2.0+git20261126002252.7898c9e
//	any of them + "-dirty"   -> ...+dirty   (after the clean build)
//
// commit is the commit's time; its UTC timestamp orders untagged builds.
func debVersion(describe string, commit time.Time) (string, error) {
	d := strings.TrimSpace(describe)
	if d == "" {
		return "", fmt.Errorf("describe is empty: %w", ErrNotVersion)
	}
	dirty := ""
	if s, ok := strings.CutSuffix(d, "-dirty"); ok {
		d, dirty = s, "+dirty"
	}
	ts := commit.UTC().Format("20060102150405")
	var v string
	switch {
	case bareHash.MatchString(d):
		v = "0.0~git" + ts + "." + d
	default:
		tag, snapshot := d, ""
		if m := describeSuffix.FindStringSubmatch(d); m != nil {
			tag, snapshot = m[1], "+git"+ts+"."+m[3]
		}
		up, err := tagVersion(tag)
		if err != nil {
			return "", err
		}
		v = up + snapshot
	}
	if dirty != "" {
		if strings.Contains(v, "+") {
			dirty = ".dirty"
		}
		v += dirty
	}
	if !debUpstream.MatchString(v) {
		return "", fmt.Errorf("describe %q gives %q: %w for Debian", describe, v, ErrNotVersion)
	}
	return v, nil
}

// tagVersion turns a release tag (v1.2.0, 1.2.0, v1.2.0-rc1) into an
// upstream version; a pre-release suffix sorts before its release.
func tagVersion(tag string) (string, error) {
	t := strings.TrimPrefix(tag, "v")
	if t == "" || t[0] < '0' || t[0] > '9' {
		return "", fmt.Errorf("tag %q: %w (want v1.2.3 or v1.2.3-rc1)", tag, ErrNotVersion)
	}
	t = strings.ReplaceAll(t, "-", "~")
	if !debUpstream.MatchString(t) {
		return "", fmt.Errorf("tag %q: %w (use only letters, digits and . + ~ -)", tag, ErrNotVersion)
	}
	return t, nil
}
