package agent

import (
	"bytes"
	"strings"
	"testing"
	"testing/fstest"
)

// The node's name: imprint.node= wins; else the DHCP server's host name;
// imprint.node=dhcp is a request, never a name.
func TestNodeNamePrecedence(t *testing.T) {
	image := fstest.MapFS{"etc/imprint/identity.conf": {Data: []byte("class node[01-64] compute\n")}}
	for _, tc := range []struct {
		node, dhcp string
		want       string // "" means: named from this machine's hardware
		says       string
	}{
		{"node05", "gpu07", "node05", ""},
		{"", "gpu07", "gpu07", "no imprint.node=: node gpu07 from DHCP host name gpu07"},
		{"dhcp", "node03.site.example", "node03", "imprint.node=dhcp: node node03"},
		{"dhcp", "", "", "imprint.node=dhcp: node "},
	} {
		var out bytes.Buffer
		a := &Agent{Console: &out, Params: Params{Node: tc.node}, dhcpHost: tc.dhcp}
		got := a.nodeName(image)
		switch {
		case tc.want != "" && got != tc.want:
			t.Errorf("node %q dhcp %q: named %q, want %q", tc.node, tc.dhcp, got, tc.want)
		case tc.want == "" && (got == "dhcp" || got == ""):
			t.Errorf("node %q dhcp %q: named %q, want a name from the hardware", tc.node, tc.dhcp, got)
		}
		if !strings.Contains(out.String(), tc.says) {
			t.Errorf("node %q dhcp %q: console %q, want %q", tc.node, tc.dhcp, out.String(), tc.says)
		}
	}
}
