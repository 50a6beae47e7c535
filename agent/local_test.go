package agent

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseCmdlineLocalMode(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Params
		wantErr string
	}{
		{"root=PARTUUID=abc ro imprint.mode=local imprint.node=gpu07 imprint.class=gpu imprint.verify=quick",
			Params{Mode: ModeLocal, Root: "PARTUUID=abc", Node: "gpu07", Class: "gpu", Verify: "quick", OnFail: "reboot"}, ""},
		{"root=PARTUUID=abc rw imprint.mode=local imprint.state=none", Params{Mode: ModeLocal, Root: "PARTUUID=abc", RW: true, State: "none", OnFail: "reboot"}, ""},
		{"imprint.source=http://a/ imprint.state=PARTUUID=x imprint.node=n1", Params{Sources: []string{"http://a/"}, State: "PARTUUID=x", Node: "n1", OnFail: "reboot"}, ""},
		{"imprint.mode=local root=/dev/vda2", Params{}, "needs root=PARTUUID="},
		{"imprint.mode=local", Params{}, "needs root=PARTUUID="},
		{"imprint.mode=remote imprint.source=http://a/", Params{}, "imprint.mode=remote"},
		{"imprint.mode=local root=PARTUUID=a imprint.verify=some", Params{}, "imprint.verify=some"},
	} {
		p, err := ParseCmdline(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(p, tc.want) {
			t.Errorf("%q:\n got %+v %v\nwant %+v", tc.in, p, err, tc.want)
		}
	}
}
