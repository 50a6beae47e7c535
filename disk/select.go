package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/imprint-dev/imprint/layout"
)

// Selector errors callers act on.
var (
	// ErrBadSelector says a disk selector does not parse.
	ErrBadSelector = errors.New("bad disk selector")
	// ErrNoDiskMatch says no eligible disk matches a selector.
	ErrNoDiskMatch = errors.New("no disk matches")
	// ErrAmbiguousDisk says a selector matches more than one disk.
	ErrAmbiguousDisk = errors.New("more than one disk matches")
)

// SelectorHelp says in one line what a selector may be, for flag help.
const SelectorHelp = "a path (/dev/sda, /dev/disk/by-id/...) or terms that must all match, comma-separated: serial=S, model=M (space as _, * ? wildcards), size>=N, size<=N, largest; never a removable, loop or running-root disk unless named by path; more than one match is refused"

// SelectOptions tune Select.
type SelectOptions struct {
	// Loop lets terms match loop devices (tests); never a real machine's
	// install target, so off by default.
	Loop bool
}

// Select resolves a disk selector to a device path, reading sysfs and
// /dev/disk under root ("/" on a running system; a fake tree in tests).
//
// A path that is not under /dev/disk/ comes back unchanged (a kernel name or
// an image file). A /dev/disk/by-id or by-path link becomes /dev/KNAME; when
// the link does not exist (no udev, as in imprint's initramfs) a by-id name
// is matched against the names udev derives from each disk's serial number
// and WWID. Other selectors are terms, all of which must match exactly one
// eligible disk (see SelectorHelp); the error then lists the candidates, or
// every disk seen and why it was not taken.
func Select(root, sel string) (string, error) {
	return SelectWith(root, sel, SelectOptions{})
}

// SelectWith is Select with options.
func SelectWith(root, sel string, o SelectOptions) (string, error) {
	if sel == "" {
		return "", fmt.Errorf("%w: empty", ErrBadSelector)
	}
	if strings.HasPrefix(sel, "/dev/disk/") {
		return resolveLink(root, sel)
	}
	if !IsSelector(sel) {
		// A mistyped term ("serail=X") must not become a new image file
		// of that name: what looks like terms and is no existing file is
		// parsed as terms, and refused.
		if _, err := os.Stat(sel); err == nil || strings.HasPrefix(sel, "/") || !strings.ContainsAny(sel, "=<>") {
			return sel, nil
		}
	}
	terms, err := parseSelector(sel)
	if err != nil {
		return "", err
	}
	disks, err := listDisks(root)
	if err != nil {
		return "", err
	}
	var match []diskInfo
	for _, d := range disks {
		if d.excluded(o) == "" && terms.match(d) {
			match = append(match, d)
		}
	}
	if terms.largest && len(match) > 1 {
		sort.SliceStable(match, func(i, j int) bool { return match[i].size > match[j].size })
		if match[0].size != match[1].size {
			match = match[:1]
		} else {
			n := 1
			for n < len(match) && match[n].size == match[0].size {
				n++
			}
			match = match[:n]
		}
	}
	switch len(match) {
	case 1:
		return "/dev/" + match[0].name, nil
	case 0:
		var seen []string
		for _, d := range disks {
			if d.size == 0 && d.virtual() {
				continue // an unattached loop device, an unused zram: noise
			}
			s := d.String()
			if why := d.excluded(o); why != "" {
				s += " [not taken: " + why + "]"
			}
			seen = append(seen, s)
		}
		if len(seen) == 0 {
			seen = []string{"none"}
		}
		return "", fmt.Errorf("%w %q; disks seen: %s", ErrNoDiskMatch, sel, strings.Join(seen, "; "))
	}
	var cands []string
	for _, d := range match {
		cands = append(cands, d.String())
	}
	return "", fmt.Errorf("%w %q: %s; add serial= or model= to pick one", ErrAmbiguousDisk, sel, strings.Join(cands, "; "))
}

// IsSelector tells terms (serial=..., size>=..., largest) from a path.
func IsSelector(s string) bool {
	if strings.HasPrefix(s, "/") {
		return false
	}
	first, _, _ := strings.Cut(s, ",")
	switch {
	case first == "largest":
		return true
	case strings.HasPrefix(first, "size") && strings.ContainsAny(first, "<>="):
		return true
	}
	k, _, ok := strings.Cut(first, "=")
	return ok && (k == "serial" || k == "model")
}

// CheckSelector parses a selector without looking at any disk, so that a
// server can refuse a bad --install-disk before a machine boots with it.
// Kernel command line values end at white space, so a selector has none.
func CheckSelector(sel string) error {
	if sel == "" {
		return fmt.Errorf("%w: empty", ErrBadSelector)
	}
	if strings.ContainsAny(sel, " \t\n") {
		return fmt.Errorf("%w %q: no spaces (it travels on the kernel command line); write a space in a model or serial as _", ErrBadSelector, sel)
	}
	// iPXE's script parser and the kernel's both take these as they are;
	// quotes, $, #, backslash, ; and friends mean something to one of them.
	for _, c := range sel {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/._-:=<>*?,+@%", c)
		if !ok {
			return fmt.Errorf("%w %q: %q cannot travel on the kernel command line; write ? (any one character) in its place", ErrBadSelector, sel, c)
		}
	}
	if !IsSelector(sel) {
		if !strings.HasPrefix(sel, "/dev/") {
			return fmt.Errorf("%w %q: want a /dev path or terms like serial=S, model=M, size>=N, largest", ErrBadSelector, sel)
		}
		return nil
	}
	_, err := parseSelector(sel)
	return err
}

type terms struct {
	serial, model []string // patterns, already normalised
	min, max      int64    // inclusive bounds; max 0: none
	largest       bool
}

func parseSelector(sel string) (terms, error) {
	var t terms
	for _, w := range strings.Split(sel, ",") {
		bad := func(why string) error { return fmt.Errorf("%w %q: %q %s", ErrBadSelector, sel, w, why) }
		switch {
		case w == "":
			return t, bad("is empty (two commas in a row?)")
		case w == "largest":
			t.largest = true
		case strings.HasPrefix(w, "size"):
			op, num := "", ""
			for _, o := range []string{">=", "<=", ">", "<", "="} {
				if rest, ok := strings.CutPrefix(w[4:], o); ok {
					op, num = o, rest
					break
				}
			}
			if op == "" {
				return t, bad("wants size>=N, size<=N, size>N, size<N or size=N")
			}
			n, err := layout.ParseSize(num)
			if err != nil {
				return t, bad(err.Error())
			}
			lo, hi := int64(0), int64(0)
			switch op {
			case ">=":
				lo = n
			case ">":
				lo = n + 1
			case "<=":
				hi = n
			case "<":
				hi = n - 1
			case "=":
				lo, hi = n, n
			}
			t.min = max(t.min, lo)
			if hi > 0 && (t.max == 0 || hi < t.max) {
				t.max = hi
			}
		default:
			k, v, ok := strings.Cut(w, "=")
			if !ok || (k != "serial" && k != "model") {
				return t, bad("is not a term: want serial=, model=, size>=, size<= or largest")
			}
			if v == "" {
				return t, bad("has no value")
			}
			v = normalise(v)
			if _, err := path.Match(v, ""); err != nil {
				return t, bad("is a bad pattern")
			}
			if k == "serial" {
				t.serial = append(t.serial, v)
			} else {
				t.model = append(t.model, v)
			}
		}
	}
	if t.max > 0 && t.min > t.max {
		return t, fmt.Errorf("%w %q: no size is both at least %s and at most %s", ErrBadSelector, sel, layout.HumanSize(t.min), layout.HumanSize(t.max))
	}
	return t, nil
}

// normalise makes model and serial comparable the way /dev/disk/by-id
// names are written: trimmed, runs of white space as one _, lower case.
func normalise(s string) string {
	return strings.ToLower(strings.Join(strings.Fields(s), "_"))
}

func (t terms) match(d diskInfo) bool {
	like := func(pats []string, v string) bool {
		for _, p := range pats {
			if ok, _ := path.Match(p, normalise(v)); !ok || v == "" {
				return false
			}
		}
		return true
	}
	return like(t.serial, d.serial) && like(t.model, d.model) &&
		d.size >= t.min && (t.max == 0 || d.size <= t.max)
}

// diskInfo is what sysfs says about one whole disk.
type diskInfo struct {
	name          string
	size          int64
	model, serial string
	wwid          string
	removable, ro bool
	holdsRoot     bool
}

func (d diskInfo) String() string {
	s := fmt.Sprintf("/dev/%s %s", d.name, layout.HumanSize(d.size))
	if d.model != "" {
		s += fmt.Sprintf(" model=%s", normalise(d.model))
	}
	if d.serial != "" {
		s += fmt.Sprintf(" serial=%s", normalise(d.serial))
	}
	return s
}

// virtual tells devices without hardware behind them.
func (d diskInfo) virtual() bool {
	for _, p := range []string{"loop", "ram", "zram", "nbd"} {
		if strings.HasPrefix(d.name, p) {
			return true
		}
	}
	return false
}

// excluded says why terms never pick d ("" when they may).
func (d diskInfo) excluded(o SelectOptions) string {
	for _, p := range []string{"ram", "zram", "dm-", "md", "loop", "nbd", "sr", "fd"} {
		if strings.HasPrefix(d.name, p) && !(p == "loop" && o.Loop) {
			return "a " + strings.TrimSuffix(p, "-") + " device"
		}
	}
	switch {
	case d.holdsRoot:
		return "holds the running root"
	case d.removable:
		return "removable"
	case d.ro:
		return "read-only"
	case d.size == 0:
		return "no medium"
	}
	return ""
}

func readAttr(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// listDisks reads every whole disk in root/sys/block.
func listDisks(root string) ([]diskInfo, error) {
	blk := filepath.Join(root, "sys", "block")
	ents, err := os.ReadDir(blk)
	if err != nil {
		return nil, fmt.Errorf("listing disks: %w", err)
	}
	rootDisks := runningRootDisks(root)
	var out []diskInfo
	for _, e := range ents {
		dir := filepath.Join(blk, e.Name())
		sectors, _ := strconv.ParseInt(readAttr(filepath.Join(dir, "size")), 10, 64)
		d := diskInfo{
			name:      e.Name(),
			size:      sectors * 512, // sysfs counts 512-byte units whatever the sector size
			model:     firstAttr(dir, "device/model", "device/name"),
			serial:    firstAttr(dir, "serial", "device/serial"),
			wwid:      firstAttr(dir, "wwid", "device/wwid"),
			removable: readAttr(filepath.Join(dir, "removable")) == "1",
			ro:        readAttr(filepath.Join(dir, "ro")) == "1",
			holdsRoot: rootDisks[e.Name()],
		}
		if d.serial == "" {
			d.serial = vpdSerial(filepath.Join(dir, "device", "vpd_pg80"))
		}
		out = append(out, d)
	}
	return out, nil
}

func firstAttr(dir string, names ...string) string {
	for _, n := range names {
		if v := readAttr(filepath.Join(dir, n)); v != "" {
			return v
		}
	}
	return ""
}

// vpdSerial reads the unit serial number page SCSI and SATA disks expose
// (a 4-byte header, then the serial, space padded).
func vpdSerial(p string) string {
	b, err := os.ReadFile(p)
	if err != nil || len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := min(int(b[2])<<8|int(b[3]), len(b)-4)
	return strings.TrimSpace(strings.Trim(string(b[4:4+n]), "\x00"))
}

// runningRootDisks names the whole disks under the mounted root: the
// disk of the root's partition, or of every device beneath a dm or md root.
// An initramfs root (no block device) or an unreadable mount table gives none.
func runningRootDisks(root string) map[string]bool {
	out := map[string]bool{}
	mounts, err := sysView{proc: filepath.Join(root, "proc"), sys: filepath.Join(root, "sys")}.mounts()
	if err != nil {
		return out
	}
	blk := filepath.Join(root, "sys", "block")
	// names maps every block device and partition to its whole disk.
	type node struct{ disk, dir string }
	names := map[string]node{}
	byDev := map[devNum]string{}
	disks, _ := os.ReadDir(blk)
	for _, e := range disks {
		dir := filepath.Join(blk, e.Name())
		names[e.Name()] = node{e.Name(), dir}
		if n, ok := parseDevNum(readAttr(filepath.Join(dir, "dev"))); ok {
			byDev[n] = e.Name()
		}
		subs, _ := os.ReadDir(dir)
		for _, s := range subs {
			pd := filepath.Join(dir, s.Name())
			if _, err := os.Stat(filepath.Join(pd, "partition")); err != nil {
				continue
			}
			names[s.Name()] = node{e.Name(), pd}
			if n, ok := parseDevNum(readAttr(filepath.Join(pd, "dev"))); ok {
				byDev[n] = s.Name()
			}
		}
	}
	var mark func(name string, depth int)
	mark = func(name string, depth int) {
		nd, ok := names[name]
		if !ok || depth > 8 {
			return
		}
		slaves, _ := os.ReadDir(filepath.Join(nd.dir, "slaves"))
		if len(slaves) == 0 {
			out[nd.disk] = true
			return
		}
		for _, s := range slaves {
			mark(s.Name(), depth+1)
		}
	}
	for _, m := range mounts {
		if m.point != "/" {
			continue
		}
		if n, ok := byDev[m.dev]; ok {
			mark(n, 0)
			continue
		}
		// btrfs reports an anonymous device number; its source names the
		// device, possibly as a device-mapper name.
		src := strings.TrimPrefix(m.source, "/dev/")
		if mapped, ok := strings.CutPrefix(src, "mapper/"); ok {
			for n, nd := range names {
				if readAttr(filepath.Join(nd.dir, "dm", "name")) == mapped {
					src = n
				}
			}
		}
		mark(src, 0)
	}
	return out
}

// resolveLink turns a /dev/disk/by-* path into /dev/KNAME.
func resolveLink(root, sel string) (string, error) {
	// udev's links are one relative hop to the node ("../../sda"); the
	// name is all that matters, so the node need not exist under root.
	target, err := os.Readlink(filepath.Join(root, sel))
	if err == nil {
		name := filepath.Base(target)
		if _, err := os.Stat(filepath.Join(root, "sys", "block", name)); err != nil {
			return "", fmt.Errorf("%w %q: it names %s, which is not a whole disk (a partition?)", ErrNoDiskMatch, sel, name)
		}
		return "/dev/" + name, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s: %w", sel, err)
	}
	// No such link: without udev (imprint's initramfs) there are no
	// /dev/disk links at all, so match by-id names from sysfs.
	id, ok := strings.CutPrefix(sel, "/dev/disk/by-id/")
	if !ok || strings.Contains(id, "/") {
		return "", fmt.Errorf("%w %q: no such link (and only by-id names can be matched without udev); select by serial= or model= instead", ErrNoDiskMatch, sel)
	}
	if strings.Contains(id, "-part") {
		return "", fmt.Errorf("%w %q: it names a partition, not a disk", ErrNoDiskMatch, sel)
	}
	disks, err := listDisks(root)
	if err != nil {
		return "", err
	}
	var match []diskInfo
	for _, d := range disks {
		if d.byIDMatch(id) {
			match = append(match, d)
		}
	}
	if len(match) == 1 {
		return "/dev/" + match[0].name, nil
	}
	var seen []string
	for _, d := range disks {
		seen = append(seen, d.String())
	}
	if len(match) > 1 {
		return "", fmt.Errorf("%w %q (no udev here; matched by serial): %s", ErrAmbiguousDisk, sel, strings.Join(seen, "; "))
	}
	return "", fmt.Errorf("%w %q: no such link, and no disk's serial or WWID gives that name; disks seen: %s", ErrNoDiskMatch, sel, strings.Join(seen, "; "))
}

// byIDMatch reports whether id is a /dev/disk/by-id name udev would give
// d: BUS-SERIAL (virtio), BUS-MODEL_SERIAL (ata, nvme, scsi, usb; matched
// on the serial, since sysfs may truncate the model), nvme-WWID, or
// wwn-0xNAA.
func (d diskInfo) byIDMatch(id string) bool {
	bus, rest, ok := strings.Cut(id, "-")
	if !ok || rest == "" {
		return false
	}
	id = strings.ToLower(id)
	rest = strings.ToLower(rest)
	if s := normalise(d.serial); s != "" && (rest == s || strings.HasSuffix(rest, "_"+s)) {
		return true
	}
	if w := strings.ToLower(d.wwid); w != "" {
		if bus == "nvme" && rest == w {
			return true
		}
		if naa, ok := strings.CutPrefix(w, "naa."); ok && id == "wwn-0x"+naa {
			return true
		}
	}
	return false
}
