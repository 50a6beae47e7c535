// Package identity decides, at boot, what one node of a shared image sees:
// its class (from a class map of names, ranges and regular expressions),
// which per-class and per-node variant of a listed file appears at the plain
// path, which directory layers go over the root, which paths are writable and
// how (volatile, persistent, copied), its hostname and machine-id.
//
// The package only plans. It reads the image through an fs.FS and never
// writes: the agent applies a Plan at boot into an overlay, so the root stays
// the master's bytes. docs/identity.md describes the configuration file.
package identity

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// ConfigPath is where an image keeps its identity configuration, relative
// to the root (io/fs style, no leading slash).
const ConfigPath = "etc/imprint/identity.conf"

// DefaultLayers is the directory of class and node layers when the
// configuration names none.
const DefaultLayers = "/etc/imprint/layers"

// DefaultClass is the class of a node no rule names, and the last step of
// every class's fallback chain.
const DefaultClass = "default"

// ErrConfig says the identity configuration is malformed or contradicts
// the image; callers at build time refuse the image, the agent at boot
// falls back to the default plan.
var ErrConfig = errors.New("bad identity configuration")

// Kind says how a writable path behaves.
type Kind string

// Writable path kinds.
const (
	// Volatile paths are written to RAM (the overlay's tmpfs) and start
	// as the image has them; every path not listed is volatile.
	Volatile Kind = "volatile"
	// Persistent paths are bind-mounted from the node's directory on the
	// disk's state partition, seeded from the image the first time only.
	Persistent Kind = "persistent"
	// Copied paths get a tmpfs of their own filled from the image at boot
	// (for programs that do not work on overlayfs).
	Copied Kind = "copied"
)

// Writable is one writable-path declaration.
type Writable struct {
	Path string `json:"path"`
	Kind Kind   `json:"kind"`
	// Default says it comes from DefaultWritable, not from the file.
	Default bool `json:"default,omitempty"`
}

// DefaultWritable are the persistent paths of a node whose configuration
// declares none: its logs and the node-owned state systemd keeps. Package
// databases (/var/lib/dpkg, /var/lib/rpm) are never among them: a kept copy
// would hide what a new image version installs.
func DefaultWritable() []Writable {
	return []Writable{
		{Path: "/var/log", Kind: Persistent, Default: true},
		{Path: "/var/lib/systemd", Kind: Persistent, Default: true},
	}
}

// NameRule maps a hardware fact to a node name (name mac=... node17).
type NameRule struct {
	Key, Value, Node string
	Line             int
}

// Rule is one line of the class map.
type Rule struct {
	Pattern string // as written
	Class   string
	Line    int

	exact    string
	re       *regexp.Regexp
	rng      *nameRange
	matchAll bool
}

// Config is a parsed identity configuration.
type Config struct {
	Source   string // file name, for messages
	Rules    []Rule
	Names    []NameRule
	Files    []string // absolute paths with per-class/per-node variants
	Layers   string   // directory of class/<class> and node/<node> layers
	Writable []Writable
	Hostname string // template: {node}, {class}
	Salt     string
	// Declared says the file had any writable line; else DefaultWritable
	// applies.
	declared bool
}

var classRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$`)
var nodeRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// ValidNode checks a node name: a host name label, which it becomes.
func ValidNode(n string) error {
	if !nodeRE.MatchString(n) {
		return fmt.Errorf("node name %q: want 1-63 letters, digits, '.', '_', '-', starting with a letter or digit", n)
	}
	return nil
}

// ValidClass checks a class name: dotted lower-case words (gpu.a100).
func ValidClass(c string) error {
	if !classRE.MatchString(c) {
		return fmt.Errorf("class %q: want dotted lower-case words, e.g. gpu.a100", c)
	}
	return nil
}

// Parse reads a configuration. name is for messages only.
func Parse(r io.Reader, name string) (*Config, error) {
	c := &Config{Source: name, Layers: DefaultLayers, Hostname: "{node}"}
	sc := bufio.NewScanner(r)
	n := 0
	seenFile := map[string]int{}
	seenW := map[string]int{}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s line %d: %s", ErrConfig, name, n, fmt.Sprintf(format, args...))
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "class":
			if len(f) != 3 {
				return nil, bad("want: class PATTERN CLASS")
			}
			r, err := compileRule(f[1], f[2])
			if err != nil {
				return nil, bad("%v", err)
			}
			r.Line = n
			c.Rules = append(c.Rules, r)
		case "name":
			if len(f) != 3 {
				return nil, bad("want: name mac=ADDR|serial=S|uuid=U NODE")
			}
			k, v, ok := strings.Cut(f[1], "=")
			switch {
			case !ok || v == "":
				return nil, bad("%q: want mac=, serial= or uuid=", f[1])
			case k == "mac":
				v = strings.ToLower(v)
			case k == "serial", k == "uuid":
			default:
				return nil, bad("%q: want mac=, serial= or uuid=", f[1])
			}
			if err := ValidNode(f[2]); err != nil {
				return nil, bad("%v", err)
			}
			c.Names = append(c.Names, NameRule{Key: k, Value: v, Node: f[2], Line: n})
		case "file":
			if len(f) < 2 {
				return nil, bad("want: file PATH...")
			}
			for _, p := range f[1:] {
				p, err := cleanPath(p)
				if err != nil {
					return nil, bad("%v", err)
				}
				if l, dup := seenFile[p]; dup {
					return nil, bad("file %s is listed on line %d already", p, l)
				}
				seenFile[p] = n
				c.Files = append(c.Files, p)
			}
		case "layers":
			if len(f) != 2 {
				return nil, bad("want: layers DIR")
			}
			p, err := cleanPath(f[1])
			if err != nil {
				return nil, bad("%v", err)
			}
			c.Layers = p
		case string(Volatile), string(Persistent), string(Copied):
			if len(f) < 2 {
				return nil, bad("want: %s PATH...", f[0])
			}
			for _, p := range f[1:] {
				p, err := cleanPath(p)
				if err != nil {
					return nil, bad("%v", err)
				}
				if Kind(f[0]) == Persistent {
					if why := mustNotPersist(p); why != "" {
						return nil, bad("persistent %s: %s", p, why)
					}
				}
				if l, dup := seenW[p]; dup {
					return nil, bad("%s is declared on line %d already", p, l)
				}
				seenW[p] = n
				c.Writable = append(c.Writable, Writable{Path: p, Kind: Kind(f[0])})
			}
			c.declared = true
		case "hostname":
			if len(f) != 2 {
				return nil, bad("want: hostname TEMPLATE (e.g. {node} or {node}.example.org)")
			}
			c.Hostname = f[1]
			if h := expand(f[1], "n", "c"); strings.ContainsAny(h, "{}/") {
				return nil, bad("hostname %q: only {node} and {class} may be used", f[1])
			}
		case "salt":
			if len(f) != 2 {
				return nil, bad("want: salt WORD")
			}
			c.Salt = f[1]
		default:
			return nil, bad("unknown directive %q (want class, name, file, layers, volatile, persistent, copied, hostname or salt)", f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if !c.declared {
		c.Writable = DefaultWritable()
	}
	if err := c.checkNesting(); err != nil {
		return nil, err
	}
	return c, nil
}

// Default is the configuration of an image without one: every node is of
// class default, no file variants, the default writable paths.
func Default() *Config {
	c, _ := Parse(strings.NewReader(""), "(built-in default)")
	return c
}

// checkNesting refuses writable paths inside other writable paths: a bind
// mount over a persistent directory would hide part of it, and which one
// wins would depend on mount order.
func (c *Config) checkNesting() error {
	for i, a := range c.Writable {
		for j, b := range c.Writable {
			if i != j && strings.HasPrefix(b.Path, a.Path+"/") {
				return fmt.Errorf("%w: %s: %s %s lies inside %s %s; declare one of them", ErrConfig, c.Source, b.Kind, b.Path, a.Kind, a.Path)
			}
		}
	}
	return nil
}

// mustNotPersist says why p may not be persistent: package databases and
// whole system trees would mask what a new image version brings.
func mustNotPersist(p string) string {
	for _, q := range []string{"/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/var", "/var/lib", "/var/lib/dpkg", "/var/lib/rpm", "/var/lib/apt", "/var/cache/apt", "/usr/lib/sysimage"} {
		if p == q || (q != "/" && strings.HasPrefix(q, p+"/")) {
			return "it holds what the image provides (a kept copy would hide a new version's changes); name the node-owned part instead"
		}
		if strings.HasPrefix(p, q+"/") && (q == "/usr" || q == "/var/lib/dpkg" || q == "/var/lib/rpm" || q == "/var/lib/apt" || q == "/boot") {
			return "it is inside " + q + ", which the image provides"
		}
	}
	return ""
}

func cleanPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("path %q is not absolute", p)
	}
	c := path.Clean(p)
	if c != p && c+"/" != p {
		return "", fmt.Errorf("path %q is not clean (want %s)", p, c)
	}
	if c == "/" {
		return "", fmt.Errorf("path / cannot be listed")
	}
	for _, seg := range strings.Split(c[1:], "/") {
		if seg == ".." || seg == "." {
			return "", fmt.Errorf("path %q has . or .. in it", p)
		}
	}
	for _, pre := range []string{"/proc", "/sys", "/dev", "/run"} {
		if c == pre || strings.HasPrefix(c, pre+"/") {
			return "", fmt.Errorf("path %s is under %s, which the running system mounts itself", c, pre)
		}
	}
	return c, nil
}

func compileRule(pattern, class string) (Rule, error) {
	r := Rule{Pattern: pattern, Class: class}
	if err := ValidClass(class); err != nil {
		return r, err
	}
	switch {
	case pattern == "*":
		r.matchAll = true
	case len(pattern) >= 2 && strings.HasPrefix(pattern, "/") && strings.HasSuffix(pattern, "/"):
		re, err := regexp.Compile("^(?:" + pattern[1:len(pattern)-1] + ")$")
		if err != nil {
			return r, fmt.Errorf("regular expression %s: %v", pattern, err)
		}
		r.re = re
	case strings.Contains(pattern, "["):
		nr, err := parseRange(pattern)
		if err != nil {
			return r, err
		}
		r.rng = nr
	default:
		if err := ValidNode(pattern); err != nil {
			return r, err
		}
		r.exact = pattern
	}
	return r, nil
}

// Match reports whether node matches the rule's pattern.
func (r Rule) Match(node string) bool {
	switch {
	case r.matchAll:
		return true
	case r.re != nil:
		return r.re.MatchString(node)
	case r.rng != nil:
		return r.rng.match(node)
	}
	return r.exact == node
}

// names lists what the rule matches when that is a finite, small set
// (exact names and ranges); ok is false for regexps and "*".
func (r Rule) names() (out []string, ok bool) {
	switch {
	case r.rng != nil:
		return r.rng.all(), true
	case r.exact != "":
		return []string{r.exact}, true
	}
	return nil, false
}

// nameRange is prefix[lo-hi]suffix; with a zero-padded lo ("01") every
// number has that width.
type nameRange struct {
	prefix, suffix string
	lo, hi, width  int
}

const maxRange = 100000

func parseRange(p string) (*nameRange, error) {
	open := strings.IndexByte(p, '[')
	cls := strings.IndexByte(p, ']')
	if cls < open || strings.Count(p, "[") != 1 || strings.Count(p, "]") != 1 {
		return nil, fmt.Errorf("range %q: want PREFIX[LO-HI]SUFFIX, e.g. node[01-64]", p)
	}
	los, his, ok := strings.Cut(p[open+1:cls], "-")
	lo, err1 := strconv.Atoi(los)
	hi, err2 := strconv.Atoi(his)
	if !ok || err1 != nil || err2 != nil || lo < 0 || strings.HasPrefix(his, "+") || strings.HasPrefix(los, "+") {
		return nil, fmt.Errorf("range %q: want two numbers LO-HI inside the brackets", p)
	}
	if lo > hi {
		return nil, fmt.Errorf("range %q: %d is above %d, so it matches nothing", p, lo, hi)
	}
	if hi-lo >= maxRange {
		return nil, fmt.Errorf("range %q: more than %d names", p, maxRange)
	}
	nr := &nameRange{prefix: p[:open], suffix: p[cls+1:], lo: lo, hi: hi}
	if len(los) > 1 && los[0] == '0' {
		nr.width = len(los)
	}
	if err := ValidNode(nr.format(hi)); err != nil {
		return nil, fmt.Errorf("range %q: %v", p, err)
	}
	return nr, nil
}

func (nr *nameRange) format(i int) string {
	return fmt.Sprintf("%s%0*d%s", nr.prefix, nr.width, i, nr.suffix)
}

func (nr *nameRange) match(node string) bool {
	if !strings.HasPrefix(node, nr.prefix) || !strings.HasSuffix(node, nr.suffix) || len(node) < len(nr.prefix)+len(nr.suffix)+1 {
		return false
	}
	num := node[len(nr.prefix) : len(node)-len(nr.suffix)]
	for _, ch := range num {
		if ch < '0' || ch > '9' {
			return false
		}
	}
	if nr.width > 0 && len(num) != nr.width {
		return false
	}
	if nr.width == 0 && len(num) > 1 && num[0] == '0' {
		return false
	}
	i, err := strconv.Atoi(num)
	return err == nil && i >= nr.lo && i <= nr.hi
}

func (nr *nameRange) all() []string {
	out := make([]string, 0, nr.hi-nr.lo+1)
	for i := nr.lo; i <= nr.hi; i++ {
		out = append(out, nr.format(i))
	}
	return out
}

// Class gives node's class: the last rule that matches wins; no match is
// DefaultClass, with matched false.
func (c *Config) Class(node string) (class string, matched bool) {
	for i := len(c.Rules) - 1; i >= 0; i-- {
		if c.Rules[i].Match(node) {
			return c.Rules[i].Class, true
		}
	}
	return DefaultClass, false
}

// Chain is the fallback order of a class, most specific first:
// gpu.a100 -> gpu.a100, gpu, default.
func Chain(class string) []string {
	var out []string
	for c := class; c != ""; {
		if c != DefaultClass {
			out = append(out, c)
		}
		i := strings.LastIndexByte(c, '.')
		if i < 0 {
			break
		}
		c = c[:i]
	}
	return append(out, DefaultClass)
}

// NameFor maps hardware facts (mac, serial, uuid) to a node name by the
// configuration's name lines; the last matching line wins.
func (c *Config) NameFor(facts map[string][]string) (string, bool) {
	for i := len(c.Names) - 1; i >= 0; i-- {
		n := c.Names[i]
		for _, v := range facts[n.Key] {
			if strings.EqualFold(v, n.Value) {
				return n.Node, true
			}
		}
	}
	return "", false
}

func expand(tmpl, node, class string) string {
	return strings.NewReplacer("{node}", node, "{class}", class).Replace(tmpl)
}

// Facts are what the machine says about itself, for naming a node that
// has no imprint.node=.
type Facts struct {
	// DHCP is the host name (option 12) the DHCP server gave, if the
	// agent asked one (diskless and netboot boots, imprint.node=dhcp).
	DHCP   string
	MACs   []string // lower-case, colon-separated, boot interface first
	Serial string   // DMI product serial
	UUID   string   // DMI product UUID
}

// NodeName names a node from its facts: the DHCP server's host name (its
// first label: node01 of node01.site.example); else a name line for one of
// its MACs, its serial or UUID; else "node-" and the first MAC's hex
// digits; else "node-" and the UUID's first 12 hex digits; else "node".
// how says which; a DHCP name that is no valid node name is passed over
// and how says that too.
func (c *Config) NodeName(f Facts) (name, how string) {
	skipped := ""
	if f.DHCP != "" {
		n, _, _ := strings.Cut(f.DHCP, ".")
		if err := ValidNode(n); err == nil {
			return n, "DHCP host name " + f.DHCP
		}
		skipped = fmt.Sprintf(" (DHCP host name %q is no node name)", f.DHCP)
	}
	name, how = c.nameFromHardware(f)
	return name, how + skipped
}

func (c *Config) nameFromHardware(f Facts) (name, how string) {
	m := map[string][]string{"mac": f.MACs}
	if f.Serial != "" {
		m["serial"] = []string{f.Serial}
	}
	if f.UUID != "" {
		m["uuid"] = []string{f.UUID}
	}
	if n, ok := c.NameFor(m); ok {
		return n, "name line of " + c.Source
	}
	if len(f.MACs) > 0 {
		return "node-" + strings.ReplaceAll(strings.ToLower(f.MACs[0]), ":", ""), "MAC " + f.MACs[0]
	}
	if u := strings.ReplaceAll(strings.ToLower(f.UUID), "-", ""); len(u) >= 12 {
		return "node-" + u[:12], "DMI product UUID"
	}
	return "node", "no imprint.node=, MAC or DMI UUID"
}
