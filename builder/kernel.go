package builder

import (
	"debug/pe"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// ErrNoKernel says a root tree has no kernel in any place a known
// distribution layout puts one.
var ErrNoKernel = errors.New("no kernel in the root tree")

// ErrTreeEscape says a symlink in a root tree points outside the tree.
var ErrTreeEscape = errors.New("symlink leaves the root tree")

// TreeFile is a boot artifact found in a root tree. Paths are slash-separated
// and start at the tree's top ("/boot/vmlinuz"), as the booted system sees them.
type TreeFile struct {
	Path    string // where it was looked up
	Target  string // where Path resolves inside the tree; equal to Path when no symlink is on the way
	Section string // the section of a unified kernel image that holds it (".linux", ".initrd"), else ""
}

func (f TreeFile) String() string {
	s := f.Path
	if f.Target != f.Path {
		s += " -> " + f.Target
	}
	if f.Section != "" {
		s += " (" + f.Section + " section)"
	}
	return s
}

// TreeKernel is the kernel FindKernel picked, with its initrd (nil when the
// layout has none for it) and the command line the layout carries ("" when it
// carries none; only unified kernel images do).
type TreeKernel struct {
	Kernel  TreeFile
	Initrd  *TreeFile
	Cmdline string
}

// kernelPlaces are the places FindKernel looks, in the order it prefers them,
// for the error that says where it looked.
var kernelPlaces = []string{
	"/boot/vmlinuz-*",
	"/usr/lib/modules/*/vmlinuz", "/lib/modules/*/vmlinuz",
	"/boot/vmlinuz", "/vmlinuz",
	"/boot/EFI/Linux/*.efi", "/efi/EFI/Linux/*.efi", "/boot/efi/EFI/Linux/*.efi",
}

type kernelCandidate struct {
	path    string   // slash path from the top, no leading slash
	version string   // what orders candidates of one place
	initrds []string // where its initrd may be, best first
	uki     bool
}

// FindKernel finds the kernel a root tree boots with, and its initrd:
//
//   - /boot/vmlinuz-VERSION (Debian, Ubuntu, SUSE; Alpine's vmlinuz-lts and
//     Arch's vmlinuz-linux are flavours in the same place) with
//     initrd.img-VERSION, initramfs-VERSION.img, initramfs-VERSION or
//     initrd-VERSION beside it; Arch's -fallback initramfs is never taken;
//   - /usr/lib/modules/VERSION/vmlinuz (Fedora, RHEL, image-based systems)
//     with /boot/initramfs-VERSION.img or initramfs.img beside the kernel;
//   - plain /boot/vmlinuz + /boot/initrd.img and /vmlinuz + /initrd.img,
//     files or symlinks;
//   - unified kernel images in /boot/EFI/Linux, /efi/EFI/Linux and
//     /boot/efi/EFI/Linux, whose .linux, .initrd and .cmdline sections give
//     all three.
//
// The places are tried in that order; within one, the newest version first
// (CompareVersions). Symlinks resolve inside the tree: an absolute target
// starts at the tree's top, and a link that climbs out of the tree is an
// ErrTreeEscape. A tree with no kernel anywhere is an ErrNoKernel.
func FindKernel(root string) (*TreeKernel, error) {
	cands, err := kernelCandidates(root)
	if err != nil {
		return nil, err
	}
	for _, c := range cands {
		target, err := resolveRegular(root, c.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a dangling link, or a name that is not a file
		}
		if err != nil {
			return nil, err
		}
		k := &TreeKernel{Kernel: TreeFile{Path: "/" + c.path, Target: "/" + target}}
		if c.uki {
			u, err := readUKI(filepath.Join(root, filepath.FromSlash(target)))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k.Kernel.Path, err)
			}
			if u == nil {
				continue // a PE without a kernel: not a unified kernel image
			}
			k.Kernel.Section = ".linux"
			if u.initrd {
				in := k.Kernel
				in.Section = ".initrd"
				k.Initrd = &in
			}
			k.Cmdline = u.cmdline
			return k, nil
		}
		for _, ip := range c.initrds {
			t, err := resolveRegular(root, ip)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			k.Initrd = &TreeFile{Path: "/" + ip, Target: "/" + t}
			break
		}
		return k, nil
	}
	return nil, fmt.Errorf("%w: %s: looked at %s", ErrNoKernel, root, strings.Join(kernelPlaces, ", "))
}

// kernelCandidates lists every name that may be a kernel, best first.
func kernelCandidates(root string) ([]kernelCandidate, error) {
	var out []kernelCandidate

	names, err := readDirIn(root, "boot")
	if err != nil {
		return nil, err
	}
	var boot []kernelCandidate
	for _, n := range names {
		v, ok := strings.CutPrefix(n, "vmlinuz-")
		if !ok || v == "" || backupName(v) {
			continue
		}
		boot = append(boot, kernelCandidate{path: "boot/" + n, version: v, initrds: []string{
			"boot/initrd.img-" + v, "boot/initramfs-" + v + ".img", "boot/initramfs-" + v,
			"boot/initrd-" + v, "boot/initrd-" + v + ".img",
		}})
	}
	slices.SortStableFunc(boot, func(a, b kernelCandidate) int { return compareFlavoured(b.version, a.version) })
	out = append(out, boot...)

	seen := map[string]bool{}
	for _, dir := range []string{"usr/lib/modules", "lib/modules"} {
		// On merged-/usr trees /lib is a link to usr/lib: one kernel, once.
		canon, err := resolve(root, dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if seen[canon] {
			continue
		}
		seen[canon] = true
		vers, err := readDirIn(root, dir)
		if err != nil {
			return nil, err
		}
		var mods []kernelCandidate
		for _, v := range vers {
			c := kernelCandidate{path: dir + "/" + v + "/vmlinuz", version: v, initrds: []string{
				"boot/initramfs-" + v + ".img", "boot/initrd.img-" + v,
				dir + "/" + v + "/initramfs.img", dir + "/" + v + "/initrd.img",
			}}
			// Arch names the initramfs after the package (pkgbase), not the version.
			if pb, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(canon), v, "pkgbase")); err == nil {
				if b := strings.TrimSpace(string(pb)); b != "" && !strings.ContainsAny(b, "/\x00") {
					c.initrds = append(c.initrds, "boot/initramfs-"+b+".img")
				}
			}
			mods = append(mods, c)
		}
		slices.SortStableFunc(mods, func(a, b kernelCandidate) int { return CompareVersions(b.version, a.version) })
		out = append(out, mods...)
	}

	out = append(out,
		kernelCandidate{path: "boot/vmlinuz", initrds: []string{"boot/initrd.img", "boot/initramfs.img", "boot/initrd"}},
		kernelCandidate{path: "vmlinuz", initrds: []string{"initrd.img"}},
	)

	for _, dir := range []string{"boot/EFI/Linux", "efi/EFI/Linux", "boot/efi/EFI/Linux"} {
		names, err := readDirIn(root, dir)
		if err != nil {
			return nil, err
		}
		var ukis []kernelCandidate
		for _, n := range names {
			if strings.EqualFold(path.Ext(n), ".efi") {
				ukis = append(ukis, kernelCandidate{path: dir + "/" + n, version: strings.TrimSuffix(n, path.Ext(n)), uki: true})
			}
		}
		slices.SortStableFunc(ukis, func(a, b kernelCandidate) int { return CompareVersions(b.version, a.version) })
		out = append(out, ukis...)
	}
	return out, nil
}

// backupName says a vmlinuz-* name is a package manager's or an admin's
// leftover, not an installed kernel.
func backupName(v string) bool {
	for _, s := range []string{".old", ".bak", ".orig", ".sig", "~"} {
		if strings.HasSuffix(v, s) {
			return true
		}
	}
	return strings.Contains(v, ".dpkg-") || strings.Contains(v, ".rpm")
}

// readDirIn lists a directory of the tree, following links inside it; a
// missing directory has no entries.
func readDirIn(root, dir string) ([]string, error) {
	canon, err := resolve(root, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	full := filepath.Join(root, filepath.FromSlash(canon))
	if st, err := os.Stat(full); err != nil || !st.IsDir() {
		return nil, nil
	}
	ents, err := os.ReadDir(full)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// resolveRegular resolves rel inside root and requires a regular file there;
// anything else counts as not existing.
func resolveRegular(root, rel string) (string, error) {
	t, err := resolve(root, rel)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(filepath.Join(root, filepath.FromSlash(t)))
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("/%s is not a regular file: %w", t, fs.ErrNotExist)
	}
	return t, nil
}

// maxLinks is the kernel's limit of symlinks followed in one lookup.
const maxLinks = 40

// resolve follows rel (slash-separated, from the top of root) inside root as
// a chroot at root would: an absolute link target starts at root, never at
// the host's /. Unlike a chroot, ".." above the top is refused
// (ErrTreeEscape) rather than clamped, since such a link was written for
// another tree. The result is slash-separated without a leading slash.
func resolve(root, rel string) (string, error) {
	todo := strings.Split(rel, "/")
	var done []string
	links, via := 0, ""
	for len(todo) > 0 {
		p := todo[0]
		todo = todo[1:]
		switch p {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				if via == "" {
					return "", fmt.Errorf("%w: %s", ErrTreeEscape, rel)
				}
				return "", fmt.Errorf("%w: %s", ErrTreeEscape, via)
			}
			done = done[:len(done)-1]
			continue
		}
		cur := path.Join(path.Join(done...), p)
		full := filepath.Join(root, filepath.FromSlash(cur))
		st, err := os.Lstat(full)
		if errors.Is(err, syscall.ENOTDIR) {
			return "", fmt.Errorf("%s: %w", full, fs.ErrNotExist)
		}
		if err != nil {
			return "", err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			if len(todo) > 0 && !st.IsDir() {
				return "", fmt.Errorf("/%s: %w", cur, fs.ErrNotExist)
			}
			done = append(done, p)
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("/%s: more than %d symlinks", rel, maxLinks)
		}
		target, err := os.Readlink(full)
		if err != nil {
			return "", err
		}
		via = "/" + cur + " -> " + target
		if strings.HasPrefix(target, "/") {
			done = done[:0]
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return path.Join(done...), nil
}

// ukiSections is what a unified kernel image holds for the build.
type ukiSections struct {
	initrd  bool
	cmdline string
}

// readUKI reads the sections of a unified kernel image; nil when the PE has
// no .linux section.
func readUKI(file string) (*ukiSections, error) {
	f, err := pe.Open(file)
	if err != nil {
		return nil, fmt.Errorf("not a PE image: %w", err)
	}
	defer f.Close()
	if f.Section(".linux") == nil {
		return nil, nil
	}
	u := &ukiSections{initrd: f.Section(".initrd") != nil}
	if s := f.Section(".cmdline"); s != nil {
		b, err := io.ReadAll(sectionReader(s))
		if err != nil {
			return nil, fmt.Errorf(".cmdline section: %w", err)
		}
		u.cmdline = strings.TrimSpace(strings.TrimRight(string(b), "\x00"))
	}
	return u, nil
}

// sectionReader reads a section's own bytes: the raw size is rounded up to
// the file alignment, the virtual size is what the section holds (and what
// systemd-stub hands to the kernel).
func sectionReader(s *pe.Section) *io.SectionReader {
	n := int64(s.Size)
	if s.VirtualSize != 0 && int64(s.VirtualSize) < n {
		n = int64(s.VirtualSize)
	}
	return io.NewSectionReader(s, 0, n)
}

// extractSection copies one section of a unified kernel image to dst.
func extractSection(uki, name, dst string) error {
	f, err := pe.Open(uki)
	if err != nil {
		return fmt.Errorf("%s: not a PE image: %w", uki, err)
	}
	defer f.Close()
	s := f.Section(name)
	if s == nil {
		return fmt.Errorf("%s: no %s section", uki, name)
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, sectionReader(s)); err != nil {
		out.Close()
		return fmt.Errorf("%s: %s section: %w", uki, name, err)
	}
	return out.Close()
}

// Files gives host paths for the kernel and initrd of a tree: the resolved
// files themselves, or for a unified kernel image its sections copied into
// dir.
func (k *TreeKernel) Files(root, dir string) (kernel, initrd string, err error) {
	get := func(f TreeFile, name string) (string, error) {
		p := filepath.Join(root, filepath.FromSlash(f.Target))
		if f.Section == "" {
			return p, nil
		}
		dst := filepath.Join(dir, name)
		return dst, extractSection(p, f.Section, dst)
	}
	if kernel, err = get(k.Kernel, "vmlinuz"); err != nil {
		return "", "", err
	}
	if k.Initrd != nil {
		if initrd, err = get(*k.Initrd, "initrd.img"); err != nil {
			return "", "", err
		}
	}
	return kernel, initrd, nil
}

// ImageCmdline turns a command line a tree carries into one for the image:
// imprint's boot entries say where the root is and mount it read-only (it
// stays the master's bytes), so the tree's root=, rootfstype=, rootflags=
// and rw/ro go, and "ro" leads.
func ImageCmdline(c string) string {
	out := []string{"ro"}
	for _, w := range strings.Fields(c) {
		k, _, _ := strings.Cut(w, "=")
		switch k {
		case "root", "rootfstype", "rootflags", "rw", "ro":
			continue
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}

// compareFlavoured orders /boot/vmlinuz-* suffixes: versions by
// CompareVersions, above flavour names without a digit (Alpine's lts, virt;
// Arch's linux, linux-lts), which carry no version to compare; among those
// the distributions' default flavours come first.
func compareFlavoured(a, b string) int {
	da, db := strings.ContainsAny(a, "0123456789"), strings.ContainsAny(b, "0123456789")
	switch {
	case da && db:
		return CompareVersions(a, b)
	case da:
		return 1
	case db:
		return -1
	}
	rank := func(s string) int { // higher is preferred; unknown flavours lowest
		if i := slices.Index(defaultFlavours, s); i >= 0 {
			return len(defaultFlavours) - i
		}
		return 0
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra - rb
	}
	return strings.Compare(b, a) // unknown flavours: alphabetical first
}

var defaultFlavours = []string{"linux", "lts", "virt"}

// CompareVersions orders version strings the way dpkg does: runs of digits
// compare as numbers, other runs character by character with letters before
// other characters and "~" before everything, even the end. So
// 6.1.0-9 < 6.1.0-28 < 6.10.1, and 6.1~rc1 < 6.1. The result is -1, 0 or 1.
func CompareVersions(a, b string) int {
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	order := func(s string, i int) int {
		if i >= len(s) {
			return 0
		}
		c := s[i]
		switch {
		case isDigit(c):
			return 0
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			return int(c)
		case c == '~':
			return -1
		}
		return int(c) + 256
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			oa, ob := order(a, i), order(b, j)
			if oa != ob {
				return sign(oa - ob)
			}
			i++
			j++
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		first := 0
		for i < len(a) && isDigit(a[i]) && j < len(b) && isDigit(b[j]) {
			if first == 0 {
				first = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if first != 0 {
			return sign(first)
		}
	}
	return 0
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
