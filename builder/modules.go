package builder

import (
	"os"
	"path"
	"path/filepath"
	"strings"
)

// TreeModules gives the modules directory (/lib/modules/RELEASE or
// /usr/lib/modules/RELEASE, as a host path under root) of kernel k in the
// tree, and its release: the release the kernel's file name carries
// (vmlinuz-RELEASE, modules/RELEASE/vmlinuz), else the only release the
// tree has modules for. "" when the tree has no modules for it.
func TreeModules(root string, k *TreeKernel) (dir, release string) {
	var names []string
	for _, p := range []string{k.Kernel.Target, k.Kernel.Path} {
		if r, ok := strings.CutPrefix(path.Base(p), "vmlinuz-"); ok {
			names = append(names, r)
		}
		if path.Base(p) == "vmlinuz" && strings.Contains(p, "/modules/") {
			names = append(names, path.Base(path.Dir(p)))
		}
	}
	bases := []string{"lib/modules", "usr/lib/modules"}
	for _, r := range names {
		for _, b := range bases {
			d := filepath.Join(root, b, r)
			if st, err := os.Stat(d); err == nil && st.IsDir() {
				return d, r
			}
		}
	}
	seen := map[string]string{}
	for _, b := range bases {
		ents, _ := os.ReadDir(filepath.Join(root, b))
		for _, e := range ents {
			if e.IsDir() {
				if _, dup := seen[e.Name()]; !dup {
					seen[e.Name()] = filepath.Join(root, b, e.Name())
				}
			}
		}
	}
	if len(seen) == 1 {
		for r, d := range seen {
			return d, r
		}
	}
	return "", ""
}
