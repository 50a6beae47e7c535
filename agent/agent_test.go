package agent

import (
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Params
		wantErr string
	}{
		{"console=ttyS0 imprint.source=http://a/,http://b/ imprint.image=node:1", Params{Sources: []string{"http://a/", "http://b/"}, Image: "node:1", OnFail: "reboot"}, ""},
		{"imprint.source=http://a/ imprint.install=/dev/vda imprint.onfail=halt", Params{Sources: []string{"http://a/"}, Install: "/dev/vda", OnFail: "halt"}, ""},
		{"imprint.source=http://a/ imprint.install=serial=S3Z1NB0K,size>=400G", Params{Sources: []string{"http://a/"}, Install: "serial=S3Z1NB0K,size>=400G", OnFail: "reboot"}, ""},
		{"imprint.source=http://a/ imprint.install=/dev/disk/by-id/nvme-eui.0025385b91b0a1c2", Params{Sources: []string{"http://a/"}, Install: "/dev/disk/by-id/nvme-eui.0025385b91b0a1c2", OnFail: "reboot"}, ""},
		{"imprint.source=http://a/ imprint.install=colour=red", Params{}, "imprint.install=colour=red"},
		{"imprint.source=http://a/ imprint.install=sda", Params{}, "imprint.install=sda"},
		{"console=ttyS0 ro", Params{}, "no imprint.source"},
		{"imprint.source=http://a/ imprint.onfail=explode", Params{}, "imprint.onfail=explode"},
		{"imprint.source=http://a/ imprint.root=ram imprint.cache=256M", Params{Sources: []string{"http://a/"}, OnFail: "reboot", RootMode: RootRAM, CacheBytes: 256 << 20}, ""},
		{"imprint.source=http://a/ imprint.root=nfs", Params{}, "imprint.root=nfs"},
		{"imprint.source=http://a/ imprint.cache=lots", Params{}, "imprint.cache=lots"},
		{"imprint.source=http://a/ imprint.fill=1", Params{Sources: []string{"http://a/"}, OnFail: "reboot", Fill: true}, ""},
		{"imprint.source=http://a/ imprint.fill=0", Params{Sources: []string{"http://a/"}, OnFail: "reboot"}, ""},
		{"imprint.source=http://a/ imprint.fill=always", Params{}, "imprint.fill=always"},
		{"imprint.source=http://a/ imprint.swarm=1", Params{Sources: []string{"http://a/"}, OnFail: "reboot", Swarm: true}, ""},
		{"imprint.source=http://a/ imprint.swarm", Params{Sources: []string{"http://a/"}, OnFail: "reboot", Swarm: true}, ""},
		{"imprint.source=http://a/ imprint.swarm=0", Params{Sources: []string{"http://a/"}, OnFail: "reboot"}, ""},
		{"imprint.source=http://a/ imprint.swarm=maybe", Params{}, "imprint.swarm=maybe"},
	} {
		p, err := ParseCmdline(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(p.Sources, ",") != strings.Join(tc.want.Sources, ",") || p.Image != tc.want.Image || p.Install != tc.want.Install || p.OnFail != tc.want.OnFail || p.Fill != tc.want.Fill || p.Swarm != tc.want.Swarm ||
			(tc.want.RootMode != "" && (p.RootMode != tc.want.RootMode || p.CacheBytes != tc.want.CacheBytes)) {
			t.Errorf("%q: %+v %v", tc.in, p, err)
		}
	}
}
