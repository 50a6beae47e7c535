package agent

import (
	"strings"
	"testing"
)

func TestParseCmdlineSlice(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64 // -1: not said (ondemand.DefaultWindow applies)
		wantErr string
	}{
		{"imprint.source=http://a/", -1, ""},
		{"imprint.source=http://a/ imprint.slice=0", 0, ""},
		{"imprint.source=http://a/ imprint.slice=64K", 64 << 10, ""},
		{"imprint.source=http://a/ imprint.slice=1M", 1 << 20, ""},
		{"imprint.source=http://a/ imprint.slice=65536", 64 << 10, ""},
		{"imprint.source=http://a/ imprint.slice=128M", 0, "imprint.slice=128M: want a size from 0 (whole chunks) to 67108864"},
		{"imprint.source=http://a/ imprint.slice=-1", 0, "imprint.slice=-1"},
		{"imprint.source=http://a/ imprint.slice=lots", 0, "imprint.slice=lots"},
		{"imprint.source=http://a/ imprint.slice", 0, "imprint.slice="},
	} {
		p, err := ParseCmdline(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		got := int64(-1)
		if p.Slice != nil {
			got = *p.Slice
		}
		if got != tc.want {
			t.Errorf("%q: slice %d, want %d", tc.in, got, tc.want)
		}
	}
}
