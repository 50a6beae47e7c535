package image

import (
	"cmp"
	"strings"
	"time"
)

// Which of two versions of an image is newer is decided in one place, here,
// and the rule is the one systemd-boot sorts boot entries by (entries carry
// their image version): sync, deploy's downgrade check, a store's newest
// version and the boot menu's slot order all agree. Were they to differ, a
// sync to a "newer" version could write an entry the loader sorts behind
// the running one, which then never boots.

// Later says whether version a (created aCreated) is newer than version b:
// the greater version by CompareVersions, then, for versions that compare
// equal ("1.01" and "1.1"), the later creation time.
func Later(aCreated time.Time, aVersion string, bCreated time.Time, bVersion string) bool {
	if c := CompareVersions(aVersion, bVersion); c != 0 {
		return c > 0
	}
	return aCreated.After(bCreated)
}

func isVersionChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("~-^.", c) >= 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// CompareVersions is the one order of image versions: systemd's
// strverscmp_improved (the UAPI version format specification): '~' sorts before anything, '-' before '^' before
// '.', numbers compare by value and are newer than letters.
func CompareVersions(a, b string) int {
	if a == "" || b == "" {
		return strings.Compare(a, b)
	}
	at := func(s string, i int) byte {
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	i, j := 0, 0
	for {
		for i < len(a) && !isVersionChar(a[i]) {
			i++
		}
		for j < len(b) && !isVersionChar(b[j]) {
			j++
		}
		if at(a, i) == '~' || at(b, j) == '~' {
			if r := cmpBool(at(a, i) != '~', at(b, j) != '~'); r != 0 {
				return r
			}
			i, j = i+1, j+1
		}
		if i >= len(a) || j >= len(b) {
			return strings.Compare(a[min(i, len(a)):], b[min(j, len(b)):])
		}
		for _, sep := range []byte{'-', '^', '.'} {
			if at(a, i) == sep || at(b, j) == sep {
				if r := cmpBool(at(a, i) != sep, at(b, j) != sep); r != 0 {
					return r
				}
				i, j = i+1, j+1
			}
		}
		if isDigit(at(a, i)) || isDigit(at(b, j)) {
			ai, bj := i, j
			for ai < len(a) && isDigit(a[ai]) {
				ai++
			}
			for bj < len(b) && isDigit(b[bj]) {
				bj++
			}
			if r := cmpBool(ai != i, bj != j); r != 0 {
				return r
			}
			for i < ai && a[i] == '0' {
				i++
			}
			for j < bj && b[j] == '0' {
				j++
			}
			if r := cmp.Compare(ai-i, bj-j); r != 0 {
				return r
			}
			if r := strings.Compare(a[i:ai], b[j:bj]); r != 0 {
				return r
			}
			i, j = ai, bj
			continue
		}
		ai, bj := i, j
		for ai < len(a) && isAlpha(a[ai]) {
			ai++
		}
		for bj < len(b) && isAlpha(b[bj]) {
			bj++
		}
		n := min(ai-i, bj-j)
		if r := strings.Compare(a[i:i+n], b[j:j+n]); r != 0 {
			return r
		}
		if r := cmp.Compare(ai-i, bj-j); r != 0 {
			return r
		}
		// Empty segments on both sides only happen at a separator, which
		// the next round handles, as systemd's loop does.
		i, j = ai, bj
	}
}

// cmpBool is systemd's CMP on two booleans: false < true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}
