package ondisk

import (
	"errors"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/image"
)

func TestCheckDowngrade(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	m := func(name, version string, at time.Time) *image.Manifest {
		return &image.Manifest{Name: name, Version: version, Created: at}
	}
	for _, tc := range []struct {
		name          string
		current, next *image.Manifest
		allow, refuse bool
	}{
		{"nothing on the disk", nil, m("a", "1", t0), false, false},
		{"upgrade", m("a", "1", t0), m("a", "2", t0.Add(time.Hour)), false, false},
		{"same version", m("a", "1", t0), m("a", "1", t0), false, false},
		{"older", m("a", "2", t0.Add(time.Hour)), m("a", "1", t0), false, true},
		{"older, allowed", m("a", "2", t0.Add(time.Hour)), m("a", "1", t0), true, false},
		{"same time, lesser version", m("a", "2", t0), m("a", "1", t0), false, true},
		// The loaders sort entries by version: a greater version is newer
		// whatever its creation time, and the time only breaks a tie.
		{"the version string wins over the creation time", m("a", "1", t0.Add(time.Hour)), m("a", "9", t0), false, false},
		{"greater by number, not by bytes", m("a", "9", t0), m("a", "10", t0), false, false},
		{"lesser by number", m("a", "10", t0), m("a", "9", t0.Add(time.Hour)), false, true},
		{"equal versions, created earlier", m("a", "1.1", t0.Add(time.Hour)), m("a", "1.01", t0), false, true},
		{"another image", m("a", "2", t0.Add(time.Hour)), m("b", "1", t0), false, false},
	} {
		err := CheckDowngrade(tc.current, tc.next, tc.allow)
		if got := errors.Is(err, ErrDowngrade); got != tc.refuse {
			t.Errorf("%s: %v, want refused=%v", tc.name, err, tc.refuse)
		}
	}
}
