package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// Check validates the image's configuration against the image at build
// time: the file parses; every class rule can match some name that no later
// rule takes; every listed file exists in some form; every variant and layer
// is for a class of the map, a node it names, or default; no per-class or
// per-node file sits beside a path that is not listed (it would be ignored
// at boot); writable paths are not symlinks. All problems are returned,
// joined, each wrapping ErrConfig.
func Check(fsys fs.FS) error {
	c, err := Load(fsys)
	if err != nil {
		return err
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrConfig, c.Source, fmt.Sprintf(format, args...)))
	}
	// Dead rules: an exact name or range every name of which a later
	// rule takes.
	for i, r := range c.Rules {
		names, ok := r.names()
		if !ok {
			continue
		}
		alive := false
		for _, n := range names {
			if c.winner(n) == i {
				alive = true
				break
			}
		}
		if !alive {
			bad("line %d: class %s %s matches nothing: later rules take every name it covers", r.Line, r.Pattern, r.Class)
		}
	}
	classes := c.classes()
	knownNode := func(n string) bool {
		if ValidNode(n) != nil {
			return false
		}
		for _, r := range c.Rules {
			if !r.matchAll && r.Match(n) {
				return true
			}
		}
		for _, nr := range c.Names {
			if nr.Node == n {
				return true
			}
		}
		return false
	}
	listed := map[string]bool{}
	for _, f := range c.Files {
		listed[f] = true
		dir, base := path.Split(f)
		ents, err := fs.ReadDir(fsys, rel(path.Clean(dir)))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			bad("file %s: %v", f, err)
			continue
		}
		found := false
		for _, e := range ents {
			n := e.Name()
			if n == base {
				found = true
				continue
			}
			suffix, ok := strings.CutPrefix(n, base+".")
			if !ok {
				continue
			}
			found = true
			if e.IsDir() {
				bad("file %s: variant %s is a directory (use a layer for directories)", f, path.Join(dir, n))
				continue
			}
			if !classes[suffix] && !knownNode(suffix) {
				bad("file %s: variant %s is for %q, which is neither a class of the map nor a node it names", f, path.Join(dir, n), suffix)
			}
		}
		if !found {
			bad("file %s is listed, but the image has neither it nor any %s.CLASS or %s.NODE variant", f, f, f)
		}
	}
	base := rel(c.Layers)
	for _, kind := range []string{"class", "node"} {
		ents, err := fs.ReadDir(fsys, path.Join(base, kind))
		if err != nil {
			continue
		}
		for _, e := range ents {
			n := e.Name()
			where := "/" + path.Join(base, kind, n)
			switch {
			case !e.IsDir():
				bad("layer %s is not a directory", where)
			case kind == "class" && !classes[n]:
				bad("layer %s is for class %q, which no rule of the map gives", where, n)
			case kind == "node" && !knownNode(n):
				bad("layer %s is for node %q, which no rule of the map names", where, n)
			}
		}
	}
	if ents, err := fs.ReadDir(fsys, base); err == nil {
		for _, e := range ents {
			if e.Name() != "class" && e.Name() != "node" {
				bad("/%s/%s: layers are /%s/class/CLASS and /%s/node/NODE", base, e.Name(), base, base)
			}
		}
	}
	// Per-class and per-node files beside unlisted paths: the agent does
	// not scan the tree at boot, so they would silently do nothing.
	var strays []string
	_ = fs.WalkDir(fsys, "etc", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		i := strings.IndexByte(d.Name(), '.')
		for i > 0 {
			suffix := d.Name()[i+1:]
			if suffix != DefaultClass && (classes[suffix] || knownNode(suffix)) {
				plain := "/" + path.Join(path.Dir(p), d.Name()[:i])
				if !listed[plain] {
					strays = append(strays, fmt.Sprintf("/%s looks like a variant of %s, which is not listed (add: file %s)", p, plain, plain))
				}
				break
			}
			j := strings.IndexByte(d.Name()[i+1:], '.')
			if j < 0 {
				break
			}
			i += j + 1
		}
		return nil
	})
	sort.Strings(strays)
	for _, s := range strays {
		bad("%s", s)
	}
	for _, w := range c.Writable {
		if st, err := fs.Lstat(fsys, rel(w.Path)); err == nil && st.Mode()&fs.ModeSymlink != 0 {
			bad("%s %s is a symlink in the image; name its target instead", w.Kind, w.Path)
		}
	}
	return errors.Join(errs...)
}

// winner is the index of the rule that decides node's class, or -1.
func (c *Config) winner(node string) int {
	for i := len(c.Rules) - 1; i >= 0; i-- {
		if c.Rules[i].Match(node) {
			return i
		}
	}
	return -1
}

// classes are every class the map gives, with their dotted parents and
// default.
func (c *Config) classes() map[string]bool {
	out := map[string]bool{DefaultClass: true}
	for _, r := range c.Rules {
		for _, cl := range Chain(r.Class) {
			out[cl] = true
		}
	}
	return out
}
