package agent

import (
	"strings"
	"testing"
)

func TestParseCmdlineReadahead(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int // -1: not said (DefaultReadahead applies)
		wantErr string
	}{
		{"imprint.source=http://a/", -1, ""},
		{"imprint.source=http://a/ imprint.readahead=0", 0, ""},
		{"imprint.source=http://a/ imprint.readahead=16", 16, ""},
		{"imprint.source=http://a/ imprint.readahead=65", 0, "imprint.readahead=65: want a number of chunks from 0 (off) to 64"},
		{"imprint.source=http://a/ imprint.readahead=-1", 0, "imprint.readahead=-1"},
		{"imprint.source=http://a/ imprint.readahead=lots", 0, "imprint.readahead=lots"},
		{"imprint.source=http://a/ imprint.readahead", 0, "imprint.readahead="},
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
		got := -1
		if p.Readahead != nil {
			got = *p.Readahead
		}
		if got != tc.want {
			t.Errorf("%q: readahead %d, want %d", tc.in, got, tc.want)
		}
	}
}
