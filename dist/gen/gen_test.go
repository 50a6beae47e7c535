package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var commitTime = time.Date(2026, 11, 26, 0, 22, 52, 0, time.UTC)

func TestDebVersionFollowsHistory(t *testing.T) {
	for _, tc := range []struct{ describe, want string }{
		{"7898c9e", "0.0~git20261126002252.7898c9e"},
		{"7898c9e-dirty", "0.0~git20261126002252.7898c9e+dirty"},
		{"v1.2.0", "1.2.0"},
		{"1.2.0", "1.2.0"},
		{"v1.2.0-dirty", "1.2.0+dirty"},
		{"v1.2.0-rc1", "1.2.0~rc1"},
		{"v1.2.0-3-g7898c9e", "1.2.0+git20261126002252.7898c9e"},
		{"v1.2.0-3-g7898c9e-dirty", "1.2.0+git20261126002252.7898c9e.dirty"},
		{"v1.2.0-rc1-3-g7898c9e", "1.2.0~rc1+git20261126002252.7898c9e"},
		{"7898c9e\n", "0.0~git20261126002252.7898c9e"},
	} {
		got, err := debVersion(tc.describe, commitTime)
		if err != nil || got != tc.want {
			t.Errorf("debVersion(%q) = %q, %v; want %q", tc.describe, got, err, tc.want)
		}
	}
}

// dpkg --compare-versions would say the same; the cases are the orderings a
// site's apt must get right when it upgrades.
func TestDebVersionOrdering(t *testing.T) {
	later := commitTime.Add(time.Hour)
	for _, tc := range []struct{ older, newer string }{
		{"v1.2.0-rc1", "v1.2.0"},
		{"v1.2.0", "v1.2.0-1-gabcdef0"},
		{"v1.2.0-1-gabcdef0", "v1.2.0-1-gabcdef0-dirty"},
		{"v1.2.0-dirty", "v1.2.0-1-gabcdef0"},
		{"abcdef0", "v0.1.0"},
	} {
		o, err := debVersion(tc.older, commitTime)
		if err != nil {
			t.Fatal(err)
		}
		n, err := debVersion(tc.newer, later)
		if err != nil {
			t.Fatal(err)
		}
		if !debLess(o, n) {
			t.Errorf("%q (%s) does not sort before %q (%s)", o, tc.older, n, tc.newer)
		}
	}
}

func TestDebVersionRejectsNonVersionTags(t *testing.T) {
	for _, d := range []string{"", "release-2", "vX", "v1.2.0_beta", "latest-3-g7898c9e"} {
		v, err := debVersion(d, commitTime)
		if !errors.Is(err, ErrNotVersion) {
			t.Errorf("debVersion(%q) = %q, %v; want ErrNotVersion", d, v, err)
		}
	}
}

func TestDocsWritesPagesAndCompletions(t *testing.T) {
	root := t.TempDir()
	if err := run([]string{"docs", "-root", root, "-version", "9.9", "-date", "1700000000"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, page := range []string{"imprint.1.gz", "imprint-deploy.1.gz", "imprint-boot-add.1.gz", "imprint-serve.1.gz"} {
		b := gunzip(t, filepath.Join(root, manDir, page))
		name := strings.TrimSuffix(page, ".1.gz")
		if !bytes.Contains(b, []byte(`.TH "`+strings.ToUpper(name)+`"`)) || !bytes.Contains(b, []byte(`"imprint 9.9"`)) {
			t.Errorf("%s: no .TH header for %s version 9.9:\n%.300s", page, name, b)
		}
	}
	for path, marker := range map[string]string{
		filepath.Join(bashDir, "imprint"):      "complete -o default -F __start_imprint imprint",
		filepath.Join(zshDir, "_imprint"):      "#compdef imprint",
		filepath.Join(fishDir, "imprint.fish"): "complete -c imprint",
	} {
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil || !bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s: want %q in it (err %v)", path, marker, err)
		}
	}
}

func TestDocsAreReproducible(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, root := range []string{a, b} {
		if err := run([]string{"docs", "-root", root, "-version", "1", "-date", "1700000000"}, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	err := filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		rel, _ := filepath.Rel(a, p)
		x, _ := os.ReadFile(p)
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two runs (err %v)", rel, err)
		}
		return nil
	})
	if err != nil || n < 10 {
		t.Fatalf("walked %d files: %v", n, err)
	}
}

func TestRunNamesTheBadArgument(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"pack"}, `unknown mode "pack"`},
		{[]string{"debversion", "-describe", "v1", "-date", "yesterday"}, `-date "yesterday"`},
		{[]string{"docs", "-date", "1700000000"}, "-root and -version are required"},
	} {
		err := run(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v; want an error containing %q", tc.args, err, tc.want)
		}
	}
}

func gunzip(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// debLess compares two upstream versions as dpkg does (verrevcmp in dpkg's
// lib/dpkg/version.c): non-digit runs by a ~-first character order, digit
// runs numerically.
func debLess(a, b string) bool { return verrevcmp(a, b) < 0 }

func verrevcmp(a, b string) int {
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	at := func(s string, i int) byte {
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	order := func(c byte) int {
		switch {
		case isDigit(c), c == 0:
			return 0
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
			return int(c)
		case c == '~':
			return -1
		default:
			return int(c) + 256
		}
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			if d := order(at(a, i)) - order(at(b, j)); d != 0 {
				return d
			}
			i, j = i+1, j+1
		}
		for at(a, i) == '0' {
			i++
		}
		for at(b, j) == '0' {
			j++
		}
		first := 0
		for isDigit(at(a, i)) && isDigit(at(b, j)) {
			if first == 0 {
				first = int(a[i]) - int(b[j])
			}
			i, j = i+1, j+1
		}
		if isDigit(at(a, i)) {
			return 1
		}
		if isDigit(at(b, j)) {
			return -1
		}
		if first != 0 {
			return first
		}
	}
	return 0
}
