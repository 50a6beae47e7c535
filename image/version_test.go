package image

import (
	"cmp"
	"testing"
	"time"
)

func TestVersionCompareFollowsSystemd(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1", "2", -1},
		{"9", "10", -1},
		{"v9", "v10", -1},
		{"001", "1", 0},
		{"1.0", "1.0.1", -1},
		{"1~rc1", "1", -1},
		{"1-2", "1.1", -1},
		{"1a", "1", 1},
		{"abc", "abcd", -1},
		{"20240101.1", "20240101.2", -1},
		{"123.45-67.88", "123.45-67.89", -1},
		{"", "1", -1},
	} {
		got := CompareVersions(c.a, c.b)
		back := CompareVersions(c.b, c.a)
		if sign(got) != c.want || sign(back) != -c.want {
			t.Errorf("strverscmp_improved(%q, %q) = %d, reverse %d; want %d", c.a, c.b, got, back, c.want)
		}
	}
}

func sign(n int) int { return cmp.Compare(n, 0) }

// TestLaterIsTheVersionOrder: the version string decides, the creation
// time only between versions that compare equal, so a store's newest
// version is the one the boot loader also sorts first.
func TestLaterIsTheVersionOrder(t *testing.T) {
	early, late := time.Unix(1000, 0), time.Unix(2000, 0)
	for _, tc := range []struct {
		aT   time.Time
		a    string
		bT   time.Time
		b    string
		want bool
	}{
		{early, "10", late, "9", true},
		{late, "9", early, "10", false},
		{early, "1.1", early, "1.0", true},
		{late, "1.01", early, "1.1", true},
		{early, "1.01", late, "1.1", false},
		{early, "2~rc1", late, "2", false},
		{early, "20240102.090000-aa", late, "20240101.230000-ff", true},
	} {
		if got := Later(tc.aT, tc.a, tc.bT, tc.b); got != tc.want {
			t.Errorf("Later(%s %q, %s %q) = %v, want %v", tc.aT.Format(time.TimeOnly), tc.a, tc.bT.Format(time.TimeOnly), tc.b, got, tc.want)
		}
	}
}
