package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// FileChoice says which variant of a listed file a node sees at Path.
type FileChoice struct {
	Path string `json:"path"` // where the node sees it
	From string `json:"from"` // the image file shown there
	// For is the node name, a class of the chain, or "default".
	For string `json:"for"`
}

// Layer is a directory of the image laid over the root.
type Layer struct {
	Dir string `json:"dir"` // absolute path in the image
	For string `json:"for"` // "class gpu", "node gpu07"
}

// Plan is what one node gets at boot.
type Plan struct {
	Node  string   `json:"node"`
	Class string   `json:"class"`
	Chain []string `json:"chain"` // class fallback order, most specific first
	// Files are the listed paths that have a variant for this node.
	Files []FileChoice `json:"files"`
	// Layers, bottom first: default, then the class chain from the most
	// general, then the node's.
	Layers    []Layer    `json:"layers"`
	Writable  []Writable `json:"writable"`
	Hostname  string     `json:"hostname"`
	MachineID string     `json:"machine_id"`
	// Messages say what was assumed (a node no rule names, a broken
	// configuration replaced by the default); the agent prints them.
	Messages []string `json:"messages,omitempty"`
}

// Load reads the image's configuration from fsys (the root of the image);
// an image without one gets Default().
func Load(fsys fs.FS) (*Config, error) {
	b, err := fs.ReadFile(fsys, ConfigPath)
	if errors.Is(err, fs.ErrNotExist) {
		return Default(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("/%s: %w", ConfigPath, err)
	}
	return Parse(bytes.NewReader(b), "/"+ConfigPath)
}

// Resolve plans node's boot from the image in fsys. class, if not empty,
// overrides the class map (imprint.class=).
func Resolve(fsys fs.FS, node, class string) (*Plan, error) {
	c, err := Load(fsys)
	if err != nil {
		return nil, err
	}
	return c.Plan(fsys, node, class)
}

// ResolveAtBoot is Resolve for the agent: it never fails over identity. A
// broken configuration or a bad class falls back to the default plan, and
// the Plan's Messages say so; a node must boot even when its identity is
// wrong.
func ResolveAtBoot(fsys fs.FS, node, class string) *Plan {
	return ResolveAtBootWith(fsys, nil, node, class)
}

// ResolveAtBootWith is ResolveAtBoot with the configuration site instead
// of the image's (a site's signed map, already checked); nil: the image's.
func ResolveAtBootWith(fsys fs.FS, site *Config, node, class string) *Plan {
	if err := ValidNode(node); err != nil {
		// Callers pass a valid name; keep going with a safe one.
		p := ResolveAtBootWith(fsys, site, "node", class)
		p.Messages = append([]string{fmt.Sprintf("%v; using %q", err, "node")}, p.Messages...)
		return p
	}
	c, err := site, error(nil)
	if c == nil {
		c, err = Load(fsys)
	}
	var msgs []string
	if err != nil {
		msgs = append(msgs, fmt.Sprintf("%v; using the default identity (class default, default writable paths)", err))
		c = Default()
	}
	p, err := c.Plan(fsys, node, class)
	if err != nil {
		msgs = append(msgs, fmt.Sprintf("%v; using class default", err))
		p, err = c.Plan(fsys, node, DefaultClass)
		if err != nil { // cannot happen: default is always valid
			p, _ = Default().Plan(fsys, node, DefaultClass)
		}
	}
	p.Messages = append(msgs, p.Messages...)
	return p
}

// Plan resolves node's view of the image in fsys.
func (c *Config) Plan(fsys fs.FS, node, class string) (*Plan, error) {
	if err := ValidNode(node); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	p := &Plan{Node: node}
	if class != "" {
		if err := ValidClass(class); err != nil {
			return nil, fmt.Errorf("%w: imprint.class=: %v", ErrConfig, err)
		}
		p.Class = class
	} else {
		var matched bool
		p.Class, matched = c.Class(node)
		if !matched {
			p.Messages = append(p.Messages, fmt.Sprintf("no class rule in %s names %s: class default", c.Source, node))
		}
	}
	p.Chain = Chain(p.Class)
	for _, f := range c.Files {
		if ch, ok := choose(fsys, f, node, p.Chain); ok {
			p.Files = append(p.Files, ch)
		}
	}
	base := rel(c.Layers)
	for i := len(p.Chain) - 1; i >= 0; i-- {
		if d := path.Join(base, "class", p.Chain[i]); isDir(fsys, d) {
			p.Layers = append(p.Layers, Layer{Dir: "/" + d, For: "class " + p.Chain[i]})
		}
	}
	if d := path.Join(base, "node", node); isDir(fsys, d) {
		p.Layers = append(p.Layers, Layer{Dir: "/" + d, For: "node " + node})
	}
	p.Writable = append([]Writable(nil), c.Writable...)
	p.Hostname = expand(c.Hostname, node, p.Class)
	p.MachineID = MachineID(c.Salt, node)
	return p, nil
}

// choose picks the variant of f for node: f.NODE, then f.CLASS along the
// chain (which ends in default).
func choose(fsys fs.FS, f, node string, chain []string) (FileChoice, bool) {
	for _, s := range append([]string{node}, chain...) {
		cand := f + "." + s
		// Lstat: a variant that is a symlink is shown as that symlink,
		// resolved in the node's root, not in the one planning.
		if st, err := fs.Lstat(fsys, rel(cand)); err == nil && (st.Mode().IsRegular() || st.Mode()&fs.ModeSymlink != 0) {
			return FileChoice{Path: f, From: cand, For: s}, true
		}
	}
	return FileChoice{}, false
}

// MachineID derives /etc/machine-id from the node name: stable across
// boots and images of one site (same salt), different between nodes. It is
// 128 bits in systemd's format (32 lower-case hex digits), marked as a
// version 4 UUID the way systemd-id128 marks random ones.
func MachineID(salt, node string) string {
	h := sha256.Sum256([]byte("imprint machine-id\x00" + salt + "\x00" + node))
	id := h[:16]
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return hex.EncodeToString(id)
}

func rel(p string) string { return strings.TrimPrefix(p, "/") }

func isDir(fsys fs.FS, p string) bool {
	st, err := fs.Stat(fsys, p)
	return err == nil && st.IsDir()
}
