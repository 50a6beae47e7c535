package identity

import (
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

const siteConf = `# site map
class node[01-64]   compute
class /gpu[0-9]+/   gpu
class gpu07         gpu.a100
class login1        login
name mac=52:54:00:AA:BB:CC node17
file /etc/fstab /etc/motd
persistent /var/log /var/lib/slurm
copied /var/spool/cron
volatile /var/tmp
hostname {node}.cluster
salt site-a
`

func image(conf string, files ...string) fstest.MapFS {
	m := fstest.MapFS{}
	if conf != "" {
		m[ConfigPath] = &fstest.MapFile{Data: []byte(conf)}
	}
	for _, f := range files {
		if strings.HasSuffix(f, "/") {
			m[strings.Trim(f, "/")] = &fstest.MapFile{Mode: 0o755 | fs.ModeDir}
			continue
		}
		m[strings.TrimPrefix(f, "/")] = &fstest.MapFile{Data: []byte(f)}
	}
	return m
}

func mustParse(t *testing.T, conf string) *Config {
	t.Helper()
	c, err := Parse(strings.NewReader(conf), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClassMapRangesRegexpsAndPrecedence(t *testing.T) {
	c := mustParse(t, siteConf)
	for _, tc := range []struct {
		node, class string
		matched     bool
	}{
		{"node01", "compute", true},
		{"node64", "compute", true},
		{"node65", "default", false}, // outside the range
		{"node1", "default", false},  // zero-padded range wants two digits
		{"node001", "default", false},
		{"gpu03", "gpu", true},
		{"gpu07", "gpu.a100", true}, // later exact rule beats the regexp
		{"gpu", "default", false},   // regexps are anchored
		{"xgpu03", "default", false},
		{"login1", "login", true},
	} {
		got, matched := c.Class(tc.node)
		if got != tc.class || matched != tc.matched {
			t.Errorf("Class(%s) = %s, %v; want %s, %v", tc.node, got, matched, tc.class, tc.matched)
		}
	}
	// Later rules win even over an earlier exact name.
	c = mustParse(t, "class node05 special\nclass node[01-10] compute\n")
	if got, _ := c.Class("node05"); got != "compute" {
		t.Errorf("node05 is %s; the later range should win", got)
	}
	// An unpadded range matches unpadded numbers only.
	c = mustParse(t, "class n[8-11] x\n")
	for n, want := range map[string]string{"n8": "x", "n11": "x", "n08": "default", "n12": "default"} {
		if got, _ := c.Class(n); got != want {
			t.Errorf("Class(%s) = %s, want %s", n, got, want)
		}
	}
}

func TestChainFallsBackThroughDottedClasses(t *testing.T) {
	for class, want := range map[string][]string{
		"gpu.a100":   {"gpu.a100", "gpu", "default"},
		"a.b.c":      {"a.b.c", "a.b", "a", "default"},
		"compute":    {"compute", "default"},
		DefaultClass: {"default"},
	} {
		if got := Chain(class); !reflect.DeepEqual(got, want) {
			t.Errorf("Chain(%s) = %v, want %v", class, got, want)
		}
	}
}

func TestMalformedConfigNamesLineAndProblem(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"class node[01-64]\n", "line 1: want: class PATTERN CLASS"},
		{"\nclass node[64-01] compute\n", "line 2: range \"node[64-01]\": 64 is above 1"},
		{"class node[a-b] compute\n", "want two numbers"},
		{"class /gpu[/ gpu\n", "regular expression /gpu[/"},
		{"class node1 Compute\n", "class \"Compute\""},
		{"class node1 gpu..a\n", "class \"gpu..a\""},
		{"file etc/fstab\n", "path \"etc/fstab\" is not absolute"},
		{"file /etc/../fstab\n", "is not clean"},
		{"file /proc/cmdline\n", "under /proc"},
		{"file /etc/fstab /etc/fstab\n", "listed on line 1 already"},
		{"persistent /var/lib/dpkg\n", "persistent /var/lib/dpkg"},
		{"persistent /usr/share/x\n", "inside /usr"},
		{"persistent /etc\n", "persistent /etc"},
		{"persistent /var/log\nvolatile /var/log/x\n", "lies inside persistent /var/log"},
		{"volatile /var/tmp\ncopied /var/tmp\n", "declared on line 1 already"},
		{"hostname {nod}\n", "only {node} and {class}"},
		{"name mac 52:54 n1\n", "want: name mac=ADDR"},
		{"name ip=1.2.3.4 n1\n", "want mac=, serial= or uuid="},
		{"frobnicate yes\n", "unknown directive \"frobnicate\""},
	} {
		_, err := Parse(strings.NewReader(tc.conf), "test.conf")
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v; want ErrConfig containing %q", tc.conf, err, tc.want)
		}
	}
}

func TestPlanSelectsFilesLayersAndWritablePaths(t *testing.T) {
	fsys := image(siteConf,
		"/etc/fstab", "/etc/fstab.default", "/etc/fstab.compute", "/etc/fstab.gpu", "/etc/fstab.node17",
		"/etc/motd", "/etc/motd.gpu.a100",
		"/etc/imprint/layers/class/default/", "/etc/imprint/layers/class/default/etc/issue",
		"/etc/imprint/layers/class/gpu/", "/etc/imprint/layers/class/gpu/etc/gpu.conf",
		"/etc/imprint/layers/class/gpu.a100/", "/etc/imprint/layers/node/gpu07/",
	)
	type want struct {
		class  string
		files  map[string]string
		layers []string
	}
	for node, w := range map[string]want{
		"node01": {"compute", map[string]string{"/etc/fstab": "/etc/fstab.compute"},
			[]string{"/etc/imprint/layers/class/default"}},
		"node17": {"compute", map[string]string{"/etc/fstab": "/etc/fstab.node17"}, // node beats class
			[]string{"/etc/imprint/layers/class/default"}},
		"gpu07": {"gpu.a100", map[string]string{"/etc/fstab": "/etc/fstab.gpu", "/etc/motd": "/etc/motd.gpu.a100"},
			[]string{"/etc/imprint/layers/class/default", "/etc/imprint/layers/class/gpu", "/etc/imprint/layers/class/gpu.a100", "/etc/imprint/layers/node/gpu07"}},
		"gpu03":  {"gpu", map[string]string{"/etc/fstab": "/etc/fstab.gpu"}, []string{"/etc/imprint/layers/class/default", "/etc/imprint/layers/class/gpu"}},
		"stray9": {"default", map[string]string{"/etc/fstab": "/etc/fstab.default"}, []string{"/etc/imprint/layers/class/default"}},
	} {
		p, err := Resolve(fsys, node, "")
		if err != nil {
			t.Fatalf("%s: %v", node, err)
		}
		files := map[string]string{}
		for _, f := range p.Files {
			files[f.Path] = f.From
		}
		var layers []string
		for _, l := range p.Layers {
			layers = append(layers, l.Dir)
		}
		if p.Class != w.class || !reflect.DeepEqual(files, w.files) || !reflect.DeepEqual(layers, w.layers) {
			t.Errorf("%s: class %s files %v layers %v; want %s %v %v", node, p.Class, files, layers, w.class, w.files, w.layers)
		}
		if p.Hostname != node+".cluster" {
			t.Errorf("%s: hostname %q", node, p.Hostname)
		}
		if (node == "stray9") != (len(p.Messages) == 1) {
			t.Errorf("%s: messages %q: only a node no rule names gets one", node, p.Messages)
		}
	}
	p, err := Resolve(fsys, "node01", "gpu.a100") // imprint.class= wins over the map
	if err != nil || p.Class != "gpu.a100" || p.Files[0].From != "/etc/fstab.gpu" {
		t.Errorf("class override: %+v, %v", p, err)
	}
	wantW := []Writable{{Path: "/var/log", Kind: Persistent}, {Path: "/var/lib/slurm", Kind: Persistent}, {Path: "/var/spool/cron", Kind: Copied}, {Path: "/var/tmp", Kind: Volatile}}
	if !reflect.DeepEqual(p.Writable, wantW) {
		t.Errorf("writable %+v, want %+v", p.Writable, wantW)
	}
}

func TestImageWithoutConfigGetsDefaults(t *testing.T) {
	p, err := Resolve(image("", "/etc/fstab", "/etc/fstab.default"), "n1", "")
	if err != nil {
		t.Fatal(err)
	}
	// No file list: the .default variant is not applied to an unlisted path.
	if p.Class != DefaultClass || len(p.Files) != 0 || p.Hostname != "n1" {
		t.Errorf("plan %+v", p)
	}
	if !reflect.DeepEqual(p.Writable, DefaultWritable()) {
		t.Errorf("writable %+v, want the defaults", p.Writable)
	}
	for _, w := range p.Writable {
		if w.Path == "/var/lib/dpkg" || w.Path == "/var/lib" {
			t.Errorf("default persistent %s would hide a new image's package database", w.Path)
		}
	}
}

func TestMachineIDIsStablePerNodeAndSalt(t *testing.T) {
	a, b := MachineID("s", "node01"), MachineID("s", "node02")
	if a != MachineID("s", "node01") || a == b || a == MachineID("t", "node01") {
		t.Errorf("machine-ids %s %s", a, b)
	}
	if len(a) != 32 || strings.Trim(a, "0123456789abcdef") != "" || a[12] != '4' {
		t.Errorf("machine-id %q is not 32 lower-case hex digits of a v4 id", a)
	}
}

func TestBootFallsBackToDefaultNeverFails(t *testing.T) {
	for _, tc := range []struct {
		name, conf, node, class, msg string
	}{
		{"malformed config", "class node[01-64\n", "node01", "", "using the default identity"},
		{"bad class override", siteConf, "node01", "BAD", "using class default"},
		{"unnamed node", siteConf, "mystery", "", "no class rule"},
		{"bad node name", siteConf, "bad/name", "", "using \"node\""},
	} {
		p := ResolveAtBoot(image(tc.conf, "/etc/fstab", "/etc/fstab.default", "/etc/fstab.compute"), tc.node, tc.class)
		if p == nil || p.Class != DefaultClass || len(p.Messages) == 0 || !strings.Contains(strings.Join(p.Messages, "\n"), tc.msg) {
			t.Errorf("%s: plan %+v; want class default and a message containing %q", tc.name, p, tc.msg)
		}
	}
}

func TestNameForMapsHardwareFacts(t *testing.T) {
	c := mustParse(t, siteConf+"name serial=XYZ node18\n")
	if n, ok := c.NameFor(map[string][]string{"mac": {"52:54:00:aa:bb:cc"}}); !ok || n != "node17" {
		t.Errorf("mac -> %q %v", n, ok)
	}
	if n, ok := c.NameFor(map[string][]string{"serial": {"xyz"}}); !ok || n != "node18" {
		t.Errorf("serial -> %q %v", n, ok)
	}
	if _, ok := c.NameFor(map[string][]string{"mac": {"52:54:00:00:00:01"}}); ok {
		t.Error("an unknown mac got a name")
	}
}

func TestCheckAtBuildTime(t *testing.T) {
	good := []string{"/etc/fstab", "/etc/fstab.compute", "/etc/fstab.gpu", "/etc/fstab.node17", "/etc/motd.default",
		"/etc/imprint/layers/class/gpu/", "/etc/imprint/layers/node/gpu07/", "/var/log/"}
	if err := Check(image(siteConf, good...)); err != nil {
		t.Fatalf("a good image fails the check: %v", err)
	}
	if err := Check(image("")); err != nil {
		t.Fatalf("an image without a configuration fails the check: %v", err)
	}
	for _, tc := range []struct {
		name, conf string
		files      []string
		want       string
	}{
		{"malformed", "class x\n", good, "line 1"},
		{"dead rule", "class node05 special\nclass node[01-10] compute\n", nil, "line 1: class node05 special matches nothing"},
		{"file for unknown class", siteConf, append(good, "/etc/fstab.storage"), "variant /etc/fstab.storage is for \"storage\""},
		{"per-node file for unlisted path", siteConf, append(good, "/etc/hosts.node17"), "/etc/hosts.node17 looks like a variant of /etc/hosts, which is not listed"},
		{"per-class file for unlisted path", siteConf, append(good, "/etc/sub/x.conf.gpu"), "/etc/sub/x.conf.gpu looks like a variant of /etc/sub/x.conf"},
		{"listed file absent", siteConf + "file /etc/nothere\n", good, "file /etc/nothere is listed, but the image has neither"},
		{"layer of unknown class", siteConf, append(good, "/etc/imprint/layers/class/storage/"), "class \"storage\", which no rule"},
		{"layer of unknown node", siteConf, append(good, "/etc/imprint/layers/node/zzz/"), "node \"zzz\", which no rule"},
		{"layer base junk", siteConf, append(good, "/etc/imprint/layers/compute/"), "layers are /etc/imprint/layers/class/CLASS"},
		{"variant is a directory", siteConf, append(good, "/etc/fstab.gpu.a100/"), "is a directory"},
	} {
		err := Check(image(tc.conf, tc.files...))
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Check = %v; want ErrConfig containing %q", tc.name, err, tc.want)
		}
	}
}

func TestNodeNameFromFacts(t *testing.T) {
	c := mustParse(t, siteConf+"name uuid=4C4C4544-0000-1111 node19\n")
	for _, tc := range []struct {
		f    Facts
		want string
	}{
		{Facts{MACs: []string{"52:54:00:12:34:56", "52:54:00:aa:bb:cc"}}, "node17"}, // any interface's MAC
		{Facts{MACs: []string{"52:54:00:12:34:56"}, UUID: "4c4c4544-0000-1111"}, "node19"},
		{Facts{MACs: []string{"52:54:00:12:34:56"}}, "node-525400123456"},
		{Facts{UUID: "ABCDEF01-2345-6789"}, "node-abcdef012345"},
		{Facts{}, "node"},
		// The DHCP server's name (serve --reserve MAC=IP,NAME) beats
		// the name lines and the hardware; a qualified name gives its
		// first label; one that is no node name is passed over.
		{Facts{DHCP: "gpu07", MACs: []string{"52:54:00:12:34:56"}}, "gpu07"},
		{Facts{DHCP: "node03.site.example", MACs: []string{"52:54:00:12:34:56"}}, "node03"},
		{Facts{DHCP: "-bad name", MACs: []string{"52:54:00:12:34:56"}}, "node-525400123456"},
	} {
		if got, _ := c.NodeName(tc.f); got != tc.want {
			t.Errorf("NodeName(%+v) = %s, want %s", tc.f, got, tc.want)
		}
		if got, _ := c.NodeName(tc.f); ValidNode(got) != nil {
			t.Errorf("NodeName gives an invalid name %q", got)
		}
	}
	if _, how := c.NodeName(Facts{DHCP: "-bad name"}); !strings.Contains(how, `DHCP host name "-bad name" is no node name`) {
		t.Errorf("a passed-over DHCP name is not named: %q", how)
	}
}
