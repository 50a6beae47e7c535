package layout

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// maxLayoutFile bounds what ParseLayout reads: a layout is a few lines, and a
// disk image passed by mistake should fail fast instead of being read whole.
const maxLayoutFile = 1 << 20

// defaultRestMin is the minimum of a bare "rest": anything smaller than the
// 1 MiB alignment cannot hold a partition anyway.
const defaultRestMin = 1 << 20

// maxNameLen is what a GPT entry's name field holds (36 UTF-16 code units).
const maxNameLen = 36

// ParseLayout reads a layout in imprint's hand-written format, in the
// format of `sfdisk --dump` (GPT only) or as JSON (layout.json), detecting
// which by its content.
// docs/layout.md describes both. Every error wraps ErrBadLayout.
func ParseLayout(r io.Reader) (Layout, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxLayoutFile+1))
	if err != nil {
		return Layout{}, fmt.Errorf("%w: reading: %w", ErrBadLayout, err)
	}
	if len(data) > maxLayoutFile {
		return Layout{}, fmt.Errorf("%w: larger than %d bytes; is this really a layout file?", ErrBadLayout, maxLayoutFile)
	}
	if bytes.IndexByte(data, 0) >= 0 || !utf8.Valid(data) {
		return Layout{}, fmt.Errorf("%w: binary data; is this really a layout file?", ErrBadLayout)
	}
	if looksLikeJSON(data) {
		return ParseJSON(data)
	}
	lines := splitLines(data)
	if looksLikeSfdisk(lines) {
		return parseSfdiskDump(lines)
	}
	return parseHandLayout(lines)
}

func splitLines(data []byte) []string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxLayoutFile+1)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// looksLikeSfdisk needs only one tell-tale line: hand-format names cannot
// contain ':', so neither pattern can occur in a hand-written layout.
func looksLikeSfdisk(lines []string) bool {
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "#") {
			continue
		}
		if strings.HasPrefix(t, "label:") || strings.Contains(t, " : start=") {
			return true
		}
	}
	return false
}

func lineErr(n int, what, word, format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s %q: %s", ErrBadLayout, n, what, word, fmt.Sprintf(format, args...))
}

func parseHandLayout(lines []string) (Layout, error) {
	var l Layout
	var at []int // line number of each partition, for errors found later
	for i, raw := range lines {
		n := i + 1
		if c := strings.IndexByte(raw, '#'); c >= 0 {
			raw = raw[:c]
		}
		f := strings.Fields(raw)
		if len(f) == 0 {
			continue
		}
		if len(f) < 4 {
			return Layout{}, fmt.Errorf("%w: line %d: %q: want NAME TYPE SIZE ROLE [FS] [optional], got %d column(s)", ErrBadLayout, n, strings.TrimSpace(raw), len(f))
		}
		if len(f) > 6 {
			return Layout{}, lineErr(n, "word", f[6], "too many columns; want NAME TYPE SIZE ROLE [FS] [optional]")
		}
		s, err := parseHandLine(n, f)
		if err != nil {
			return Layout{}, err
		}
		l.Partitions = append(l.Partitions, s)
		at = append(at, n)
	}
	return finishLayout(l, at)
}

func parseHandLine(n int, f []string) (Spec, error) {
	s := Spec{Name: f[0]}
	if err := checkName(s.Name); err != nil {
		return Spec{}, lineErr(n, "name", s.Name, "%s", err)
	}
	typ, err := TypeGUID(f[1])
	if err != nil {
		return Spec{}, lineErr(n, "type", f[1], "neither a GUID nor a known name (%s)", strings.Join(knownTypeNames(), ", "))
	}
	s.Type = typ
	s.Role = Role(strings.ToLower(f[3]))
	if !s.Role.Valid() {
		return Spec{}, lineErr(n, "role", f[3], "want image, esp, local, keep or bios-boot")
	}
	if err := parseSizeWord(f[2], &s); err != nil {
		return Spec{}, lineErr(n, "size", f[2], "%s", err)
	}
	for _, w := range f[4:] {
		switch lw := strings.ToLower(w); lw {
		case "optional":
			if s.Optional {
				return Spec{}, lineErr(n, "word", w, "given twice")
			}
			if !s.Rest {
				return Spec{}, lineErr(n, "word", w, "only a \"rest\" partition can be optional")
			}
			s.Optional = true
		case "swap", "ext4":
			if s.FS != "" {
				return Spec{}, lineErr(n, "filesystem", w, "a partition gets one filesystem, already have %q", s.FS)
			}
			if s.Role != RoleLocal {
				return Spec{}, lineErr(n, "filesystem", w, "only local partitions get a filesystem, this one is %s", s.Role)
			}
			s.FS = lw
		default:
			return Spec{}, lineErr(n, "word", w, "want a filesystem (swap, ext4) or \"optional\"")
		}
	}
	return s, nil
}

// parseSizeWord fills Size and Rest from the SIZE column; it needs Role set
// because "auto" only makes sense for content that comes from the image.
func parseSizeWord(w string, s *Spec) error {
	lw := strings.ToLower(w)
	switch {
	case lw == "auto":
		if s.Role != RoleImage {
			return fmt.Errorf("\"auto\" (the size of the content) is only for image partitions, this one is %s", s.Role)
		}
		s.Size = 0
		return nil
	case lw == "rest" || strings.HasPrefix(lw, "rest:"):
		if s.Role == RoleImage {
			return fmt.Errorf("an image partition has the size of its content; use \"auto\" or a size, not \"rest\"")
		}
		s.Rest = true
		s.Size = defaultRestMin
		if strings.HasPrefix(lw, "rest:") {
			v, err := parseBytes(w[len("rest:"):])
			if err != nil {
				return fmt.Errorf("minimum: %w", err)
			}
			s.Size = v
		}
		return nil
	}
	v, err := parseBytes(w)
	if err != nil {
		return err
	}
	s.Size = v
	return nil
}

// ParseSize reads a size as an admin writes it: "512M", "1GiB", "4096".
func ParseSize(w string) (int64, error) { return parseBytes(w) }

// parseBytes reads "512M", "1GiB", "4096". Units are binary because disk
// tools (sgdisk, sfdisk) mean binary multiples by K/M/G too.
func parseBytes(w string) (int64, error) {
	i := 0
	for i < len(w) && w[i] >= '0' && w[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("want a number of bytes with an optional K, M, G or T suffix")
	}
	num, err := strconv.ParseInt(w[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("number out of range")
	}
	var shift uint
	switch strings.ToLower(w[i:]) {
	case "", "b":
		shift = 0
	case "k", "kib":
		shift = 10
	case "m", "mib":
		shift = 20
	case "g", "gib":
		shift = 30
	case "t", "tib":
		shift = 40
	case "kb", "mb", "gb", "tb":
		return 0, fmt.Errorf("ambiguous unit %q (decimal or binary?); write K, M, G, T or KiB, MiB, GiB, TiB", w[i:])
	default:
		return 0, fmt.Errorf("unknown unit %q; want K, M, G, T (binary) or none for bytes", w[i:])
	}
	if num > math.MaxInt64>>shift {
		return 0, fmt.Errorf("too large")
	}
	v := num << shift
	if v <= 0 {
		return 0, fmt.Errorf("must be more than zero")
	}
	if v > MaxPartitionSize {
		return 0, fmt.Errorf("%s is larger than the %s limit", w, HumanSize(MaxPartitionSize))
	}
	if v%512 != 0 {
		return 0, fmt.Errorf("%d bytes is not a multiple of 512", v)
	}
	return v, nil
}

// checkName keeps names to what is safe as a GPT name, a file name in a
// store and a word in this format.
func checkName(name string) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("longer than %d characters (a GPT name holds %d)", maxNameLen, maxNameLen)
	}
	for _, c := range name {
		if !nameRune(c) {
			return fmt.Errorf("character %q not allowed; use letters, digits, '-', '_' and '.'", c)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("not a usable name")
	}
	return nil
}

func nameRune(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}

func knownTypeNames() []string {
	names := make([]string, 0, len(typeNames))
	for n := range typeNames {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// finishLayout runs the whole-layout checks with line numbers, because
// Validate can only say "partition 3". Validate still runs as a backstop
// when it can: it rejects the size 0 that "auto" image partitions carry.
func finishLayout(l Layout, at []int) (Layout, error) {
	if len(l.Partitions) == 0 {
		return Layout{}, fmt.Errorf("%w: no partitions", ErrBadLayout)
	}
	if len(l.Partitions) > 128 {
		return Layout{}, fmt.Errorf("%w: line %d: %d partitions, GPT holds 128", ErrBadLayout, at[128], len(l.Partitions))
	}
	seen := map[string]int{}
	restAt, espAt := 0, 0
	auto := false
	for i, p := range l.Partitions {
		n := at[i]
		if first, ok := seen[p.Name]; ok {
			return Layout{}, lineErr(n, "name", p.Name, "already used on line %d", first)
		}
		seen[p.Name] = n
		if p.Rest {
			if restAt != 0 {
				return Layout{}, lineErr(n, "size", layoutSizeWord(p), "a second partition taking the rest of the disk (line %d already does)", restAt)
			}
			restAt = n
		}
		if p.Role == RoleESP {
			if espAt != 0 {
				return Layout{}, lineErr(n, "role", string(p.Role), "a second ESP (line %d is one)", espAt)
			}
			espAt = n
		}
		if p.Role == RoleImage && p.Size == 0 && !p.Rest {
			auto = true
		}
	}
	if !auto {
		if err := l.Validate(); err != nil {
			return Layout{}, err
		}
	}
	return l, nil
}

// FormatLayout writes l in the hand-written format, aligned for reading.
// ParseLayout gives back the same layout for any layout it accepts.
func FormatLayout(l Layout) string {
	var b strings.Builder
	b.WriteString("# name  type  size  role  [fs]  [optional]\n")
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	for _, p := range l.Partitions {
		cols := []string{p.Name, TypeName(p.Type), layoutSizeWord(p), string(p.Role)}
		if p.FS != "" {
			cols = append(cols, p.FS)
		}
		if p.Optional {
			cols = append(cols, "optional")
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	tw.Flush()
	return b.String()
}

func layoutSizeWord(p Spec) string {
	switch {
	case p.Rest && (p.Size <= 0 || p.Size == defaultRestMin):
		return "rest"
	case p.Rest:
		return "rest:" + bytesWord(p.Size)
	case p.Size == 0 && p.Role == RoleImage:
		return "auto"
	}
	return bytesWord(p.Size)
}

// bytesWord uses the largest unit that divides n exactly, so the text is
// both short and lossless.
func bytesWord(n int64) string {
	if n <= 0 {
		return strconv.FormatInt(n, 10)
	}
	units := []string{"", "K", "M", "G", "T"}
	u := min(bits.TrailingZeros64(uint64(n))/10, len(units)-1)
	return strconv.FormatInt(n>>(10*u), 10) + units[u]
}

// parseSfdiskDump turns a GPT dump into a layout that recreates the disk's
// shape with imprint's roles: image content for root/usr types, local
// filesystems for everything else, the last local partition growing.
func parseSfdiskDump(lines []string) (Layout, error) {
	sector := int64(512)
	type entry struct {
		line  int
		num   int // from the device name, for the fallback name
		start int64
		hasSt bool
		size  int64
		typ   string
		name  string
	}
	var ents []entry
	for i, raw := range lines {
		n := i + 1
		t := strings.TrimSpace(raw)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		dev, attrs, isPart := splitSfdiskPartLine(t)
		if !isPart {
			key, val, ok := strings.Cut(t, ":")
			if !ok {
				return Layout{}, lineErr(n, "line", t, "neither a header (key: value) nor a partition (device : start=..., size=...)")
			}
			key, val = strings.TrimSpace(key), strings.TrimSpace(val)
			if len(ents) > 0 {
				return Layout{}, lineErr(n, "header", key, "header line after the partitions")
			}
			switch key {
			case "label":
				if val != "gpt" {
					return Layout{}, lineErr(n, "label", val, "only GPT dumps are supported; convert the disk with sgdisk -g or write a layout by hand")
				}
			case "unit":
				if val != "sectors" {
					return Layout{}, lineErr(n, "unit", val, "want \"sectors\"")
				}
			case "sector-size":
				v, err := strconv.ParseInt(val, 10, 64)
				if err != nil || v < 512 || v > 65536 || v&(v-1) != 0 {
					return Layout{}, lineErr(n, "sector-size", val, "want a power of two from 512 to 65536")
				}
				sector = v
			}
			// label-id, device, first-lba, last-lba, table-length, grain:
			// they describe one disk, and a layout describes any disk.
			continue
		}
		kv, err := parseSfdiskAttrs(attrs)
		if err != nil {
			return Layout{}, lineErr(n, "partition", dev, "%s", err)
		}
		e := entry{line: n, num: len(ents) + 1}
		if d := strings.TrimRightFunc(dev, func(r rune) bool { return r >= '0' && r <= '9' }); d != dev {
			if v, err := strconv.Atoi(dev[len(d):]); err == nil && v > 0 {
				e.num = v
			}
		}
		if v, ok := kv["start"]; ok {
			st, err := strconv.ParseInt(v, 10, 64)
			if err != nil || st < 0 {
				return Layout{}, lineErr(n, "start", v, "want a sector number")
			}
			e.start, e.hasSt = st, true
		}
		v, ok := kv["size"]
		if !ok {
			return Layout{}, lineErr(n, "partition", dev, "no size=")
		}
		sz, err := strconv.ParseInt(v, 10, 64)
		if err != nil || sz <= 0 || sz > math.MaxInt64/sector {
			return Layout{}, lineErr(n, "size", v, "want a positive number of sectors")
		}
		if sz > MaxPartitionSize/sector {
			return Layout{}, lineErr(n, "size", v, "larger than the %s limit", HumanSize(MaxPartitionSize))
		}
		e.size = sz * sector
		v, ok = kv["type"]
		if !ok {
			return Layout{}, lineErr(n, "partition", dev, "no type=")
		}
		if e.typ, err = TypeGUID(v); err != nil {
			return Layout{}, lineErr(n, "type", v, "not a GPT type GUID (is this an MBR dump?)")
		}
		e.name = kv["name"]
		ents = append(ents, e)
	}
	if len(ents) == 0 {
		return Layout{}, fmt.Errorf("%w: the sfdisk dump has no partitions", ErrBadLayout)
	}
	// A layout is in disk order; the table order may differ from it.
	allStart := true
	for _, e := range ents {
		allStart = allStart && e.hasSt
	}
	if allStart {
		sort.SliceStable(ents, func(i, j int) bool { return ents[i].start < ents[j].start })
	}

	l := Layout{Partitions: make([]Spec, 0, len(ents))}
	at := make([]int, 0, len(ents))
	used := map[string]bool{}
	for _, e := range ents {
		s := Spec{Type: e.typ, Size: e.size}
		switch {
		case isESPType(e.typ):
			s.Role = RoleESP
		case e.typ == TypeBIOSBoot:
			s.Role = RoleBIOSBoot
		case e.typ == TypeSwap:
			s.Role, s.FS = RoleLocal, "swap"
		case isImageContentType(e.typ):
			s.Role, s.Size = RoleImage, 0
		default:
			s.Role, s.FS = RoleLocal, "ext4"
		}
		s.Name = uniqueName(SanitizeName(e.name, e.num), used)
		used[s.Name] = true
		l.Partitions = append(l.Partitions, s)
		at = append(at, e.line)
	}
	if last := &l.Partitions[len(l.Partitions)-1]; last.Role == RoleLocal {
		last.Rest = true // Size stays: the disk's partition is the minimum
	}
	return finishLayout(l, at)
}

// splitSfdiskPartLine splits "dev : start=..., size=..." into device and
// attributes. Device paths may themselves contain ':' (by-path names), so
// the separator is the colon followed by the first key=value.
func splitSfdiskPartLine(t string) (dev, attrs string, ok bool) {
	if i := strings.Index(t, " : "); i >= 0 {
		rest := strings.TrimSpace(t[i+3:])
		if j := strings.IndexByte(rest, '='); j > 0 && !strings.ContainsAny(rest[:j], " ,:\"") {
			return strings.TrimSpace(t[:i]), rest, true
		}
	}
	// sfdisk also reads bare attribute lines without a device.
	if j := strings.IndexByte(t, '='); j > 0 && !strings.ContainsAny(t[:j], " ,:\"") {
		return "", t, true
	}
	return "", "", false
}

// parseSfdiskAttrs reads `key=value, key="quoted, value", flag`; sfdisk
// quotes names and escapes unsafe bytes as \xHH.
func parseSfdiskAttrs(s string) (map[string]string, error) {
	kv := map[string]string{}
	for _, item := range splitUnquoted(s) {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok {
			kv[k] = "" // a flag such as "bootable"
			continue
		}
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, "\"") {
			uq, err := unquoteSfdisk(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			v = uq
		}
		kv[k] = v
	}
	return kv, nil
}

// splitUnquoted splits at commas outside double quotes; a quote inside a
// quoted value is escaped, so the quotes always pair up.
func splitUnquoted(s string) []string {
	var items []string
	inQ, from := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && inQ:
			i++
		case s[i] == '"':
			inQ = !inQ
		case s[i] == ',' && !inQ:
			items = append(items, s[from:i])
			from = i + 1
		}
	}
	return append(items, s[from:])
}

func unquoteSfdisk(v string) (string, error) {
	if len(v) < 2 || !strings.HasSuffix(v, "\"") {
		return "", fmt.Errorf("unterminated quote in %s", v)
	}
	v = v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '\\' || i+1 == len(v) {
			b.WriteByte(c)
			continue
		}
		i++
		if (v[i] == 'x' || v[i] == 'X') && i+2 < len(v) {
			if h, err := strconv.ParseUint(v[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(h))
				i += 2
				continue
			}
		}
		b.WriteByte(v[i])
	}
	return b.String(), nil
}

// SanitizeName makes a GPT partition name, free text on disk ("EFI
// System", "Microsoft basic data"), usable as a layout name: lower case,
// letters, digits, '-', '_' and '.', at most 36 characters; "partN" when
// nothing is left.
func SanitizeName(name string, num int) string {
	var b strings.Builder
	for _, c := range strings.ToLower(strings.TrimSpace(name)) {
		if nameRune(c) {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	// Edge dashes only come from replaced characters and read badly,
	// especially a leading one on a command line.
	s := strings.Trim(b.String(), "-")
	if len(s) > maxNameLen {
		s = s[:maxNameLen]
	}
	if strings.Trim(s, ".") == "" {
		return "part" + strconv.Itoa(num)
	}
	return s
}

func uniqueName(name string, used map[string]bool) string {
	if !used[name] {
		return name
	}
	for i := 2; ; i++ {
		suf := strconv.Itoa(i)
		base := name
		if len(base)+len(suf) > maxNameLen {
			base = base[:maxNameLen-len(suf)]
		}
		if c := base + suf; !used[c] {
			return c
		}
	}
}

func isESPType(g string) bool { return g == TypeESP }

// isImageContentType reports the UAPI root and /usr types (every
// architecture, with their verity and verity-signature companions): their
// bytes are the image's, so a layout taken from a disk gets them from the
// image rather than as empty local partitions.
func isImageContentType(g string) bool {
	switch g {
	// root
	case "44479540-F297-41B2-9AF7-D131D5F0458A", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
		"6523F8AE-3EB1-4E2A-A05A-18B695AE656F", "D27F46ED-2919-4CB8-BD25-9531F3C16534",
		"69DAD710-2CE4-4E3C-B16C-21A1D49ABED3", "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
		"993D8D3D-F80E-4225-855A-9DAF8ED7EA97", "77055800-792C-4F94-B39A-98C91B762BB6",
		"37C58C8A-D913-4156-A25F-48B1B64E07F0", "700BDA43-7A34-4507-B179-EEB93D7A7CA3",
		"1DE3F1EF-FA98-47B5-8DCD-4A860A654D78", "912ADE1D-A839-4913-8964-A10EEE08FBD2",
		"C31C45E6-3F39-412E-80FB-4809C4980599", "60D5A7FE-8E7D-435C-B714-3DD8162144E1",
		"72EC70A6-CF74-40E6-BD49-4BDA08E8F224", "08A7ACEA-624C-4A20-91E8-6E0FA67D23F9",
		"5EEAD9A9-FE09-4A1E-A1D7-520D00531306", "C50CDD70-3862-4CC3-90E1-809A8C93EE2C",
		// usr
		"75250D76-8CC6-458E-BD66-BD47CC81A812", "8484680C-9521-48C6-9C11-B0720656F69E",
		"E18CF08C-33EC-4C0D-8246-C6C6FB3DA024", "7978A683-6316-4922-BBEE-38BFF5A2FECC",
		"7D0359A3-02B3-4F0A-865C-654403E70625", "B0E01050-EE5F-4390-949A-9101B17104E9",
		"4301D2A6-4E3B-4B2A-BB94-9E0B2C4225EA", "E611C702-575C-4CBE-9A46-434FA0BF7E3F",
		"0F4868E9-9952-4706-979F-3ED3A473E947", "C97C1F32-BA06-40B4-9F22-236061B08AA8",
		"7D14FEC5-CC71-415D-9D6C-06BF0B3C3EAF", "2C9739E2-F068-46B3-9FD0-01C5A9AFBCCA",
		"15BB03AF-77E7-4D4A-B12B-C0D084F7491C", "B933FB22-5C3F-4F91-AF90-E2BB0FA50702",
		"BEAEC34B-8442-439B-A40B-984381ED097D", "CD0F869B-D0FB-4CA0-B141-9EA87CC78D66",
		"8A4F5770-50AA-4ED3-874A-99B710DB6FEA", "55497029-C7C1-44CC-AA39-815ED1558630",
		// root verity
		"D13C5D3B-B5D1-422A-B29F-9454FDC89D76", "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5",
		"FC56D9E9-E6E5-4C06-BE32-E74407CE09A5", "24B2D975-0F97-4521-AFA1-CD531E421B8D",
		"7386CDF2-203C-47A9-A498-F2ECCE45A2D6", "DF3300CE-D69F-4C92-978C-9BFB0F38D820",
		"86ED10D5-B607-45BB-8957-D350F23D0571", "F3393B22-E9AF-4613-A948-9D3BFBD0C535",
		"D7D150D2-2A04-4A33-8F12-16651205FF7B", "16B417F8-3E06-4F57-8DD2-9B5232F41AA6",
		"98CFE649-1588-46DC-B2F0-ADD147424925", "9225A9A3-3C19-4D89-B4F6-EEFF88F17631",
		"906BD944-4589-4AAE-A4E4-DD983917446A", "AE0253BE-1167-4007-AC68-43926C14C5DE",
		"B6ED5582-440B-4209-B8DA-5FF7C419EA3D", "7AC63B47-B25C-463B-8DF8-B4A94E6C90E1",
		"B325BFBE-C7BE-4AB8-8357-139E652D2F6B", "966061EC-28E4-4B2E-B4A5-1F0A825A1D84",
		// usr verity
		"8F461B0D-14EE-4E81-9AA9-049B6FB97ABD", "77FF5F63-E7B6-4633-ACF4-1565B864C0E6",
		"8CCE0D25-C0D0-4A44-BD87-46331BF1DF67", "FCA0598C-D880-4591-8C16-4EDA05C7347C",
		"C215D751-7BCD-4649-BE90-6627490A4C05", "6E11A4E7-FBCA-4DED-B9E9-E1A512BB664E",
		"6A491E03-3BE7-4545-8E38-83320E0EA880", "F46B2C26-59AE-48F0-9106-C50ED47F673D",
		"46B98D8D-B55C-4E8F-AAB3-37FCA7F80752", "3C3D61FE-B5F3-414D-BB71-8739A694A4EF",
		"DF765D00-270E-49E5-BC75-F47BB2118B09", "BDB528A5-A259-475F-A87D-DA53FA736A07",
		"EE2B9983-21E8-4153-86D9-B6901A54D1CE", "CB1EE4E3-8CD0-4136-A0A4-AA61A32E8730",
		"8F1056BE-9B05-47C4-81D6-BE53128E5B54", "B663C618-E7BC-4D6D-90AA-11B756BB1797",
		"31741CC4-1A2A-4111-A581-E00B447D2D06", "2FB4BF56-07FA-42DA-8132-6B139F2026AE",
		// root verity signature
		"5996FC05-109C-48DE-808B-23FA0830B676", "41092B05-9FC8-4523-994F-2DEF0408B176",
		"D46495B7-A053-414F-80F7-700C99921EF8", "143A70BA-CBD3-4F06-919F-6C05683A78BC",
		"42B0455F-EB11-491D-98D3-56145BA9D037", "6DB69DE6-29F4-4758-A7A5-962190F00CE3",
		"E98B36EE-32BA-4882-9B12-0CE14655F46A", "5AFB67EB-ECC8-4F85-AE8E-AC1E7C50E7D0",
		"C919CC1F-4456-4EFF-918C-F75E94525CA5", "904E58EF-5C65-4A31-9C57-6AF5FC7C5DE7",
		"1B31B5AA-ADD9-463A-B2ED-BD467FC857E7", "F5E2C20C-45B2-4FFA-BCE9-2A60737E1AAF",
		"D4A236E7-E873-4C07-BF1D-BF6CF7F1C3C6", "3A112A75-8729-4380-B4CF-764D79934448",
		"EFE0F087-EA8D-4469-821A-4C2A96A8386A", "3482388E-4254-435A-A241-766A065F9960",
		"C80187A5-73A3-491A-901A-017C3FA953E9", "B3671439-97B0-4A53-90F7-2D5A8F3AD47B",
		// usr verity signature
		"974A71C0-DE41-43C3-BE5D-5C5CCD1AD2C0", "E7BB33FB-06CF-4E81-8273-E543B413E2E2",
		"5C6E1C76-076A-457A-A0FE-F3B4CD21CE6E", "94F9A9A1-9971-427A-A400-50CB297F0F35",
		"D7FF812F-37D1-4902-A810-D76BA57B975A", "C23CE4FF-44BD-4B00-B2D4-B41B3419E02A",
		"8DE58BC2-2A43-460D-B14E-A76E4A17B47F", "B024F315-D330-444C-8461-44BBDE524E99",
		"3E23CA0B-A4BC-4B4E-8087-5AB6A26AA8A9", "F2C2C7EE-ADCC-4351-B5C6-EE9816B66E16",
		"7007891D-D371-4A80-86A4-5CB875B9302E", "0B888863-D7F8-4D9E-9766-239FCE4D58AF",
		"C8BFBD1E-268E-4521-8BBA-BF314C399557", "C3836A13-3137-45BA-B583-B16C50FE5EB4",
		"D2F9000A-7A18-453F-B5CD-4D32F77A7B32", "17440E4F-A8D0-467F-A46E-3912AE6EF2C5",
		"3F324816-667B-46AE-86EE-9B0C0C6C11B4", "4EDE75E2-6CCC-4CC8-B9C7-70334B087510":
		return true
	}
	return false
}
