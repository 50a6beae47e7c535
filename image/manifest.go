// Package image owns the image format: manifest types, chunk naming and
// hashing, compression frames and signatures. Where manifests and chunks
// are kept is the store package's.
package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/imprint-dev/imprint/layout"
)

// FormatVersion is the manifest format this code writes. It reads this one
// and format 1 (FormatV1). docs/format.md describes both.
const FormatVersion = 2

// FormatV1 is the first format: the disk layout was part of the manifest,
// and so of the image id. It is still read, never written.
const FormatV1 = 1

// DefaultChunkSize balances dedup granularity against per-chunk overhead.
const DefaultChunkSize = 1 << 20 // docs/chunk-size.md: sync deltas 3.5x smaller than at 4 MiB

// ZeroChunk marks an all-zero chunk in a chunk list; it is never stored.
const ZeroChunk = "zero"

// Size caps. They bound what a manifest can make a reader allocate or
// write, and keep every size computation far from int64 overflow.
const (
	MaxBootFile      = 1 << 30 // kernel, initrd, agent
	MaxLoaderSize    = 64 << 20
	MaxPartition     = 1 << 50
	MaxPartitions    = 128 // what a GPT holds
	maxPartitionName = 36  // what a GPT entry's name field holds
)

// Loader names: the keys of Manifest.Loaders, each the file name of a boot
// loader binary that lands on an ESP or goes out by TFTP. GRUB's BIOS
// images are the bytes grub-mkimage made, before the per-disk patch
// (blocklist, kernel sector) a deploy applies.
const (
	LoaderSystemdBoot  = "systemd-bootx64.efi"
	LoaderIPXEEFI      = "ipxe.efi"
	LoaderIPXEBIOS     = "undionly.kpxe"
	LoaderGrubEFI      = "grubx64.efi"
	LoaderGrubBIOSBoot = "grub-i386-pc-boot.img"
	LoaderGrubBIOSCore = "grub-i386-pc-core.img"
	// LoaderIPXELkrn is iPXE as a Linux kernel, which GRUB starts for the
	// netboot entry under legacy BIOS.
	LoaderIPXELkrn = "ipxe.lkrn"
)

// LoaderNames lists every loader name this code knows, in a fixed order. A
// manifest naming another is refused: a reader would not know where it
// goes.
func LoaderNames() []string {
	return []string{LoaderSystemdBoot, LoaderIPXEEFI, LoaderIPXEBIOS, LoaderGrubEFI, LoaderGrubBIOSBoot, LoaderGrubBIOSCore, LoaderIPXELkrn}
}

// KnownRequires lists the critical features ("requires") this code
// implements. A manifest naming any other is refused.
func KnownRequires() []string { return nil }

// Sentinel errors callers act on.
var (
	ErrFormat   = errors.New("malformed manifest")
	ErrChecksum = errors.New("checksum mismatch")
	// ErrInconsistent says a manifest's content sha256 is not the hash of
	// what its chunk list adds up to: every chunk may be right, the
	// manifest contradicts itself. It is an ErrChecksum too.
	ErrInconsistent = fmt.Errorf("%w: the manifest is inconsistent", ErrChecksum)
	// ErrRequires says the manifest needs features this imprint lacks: the
	// answer is a newer imprint, not a fixed manifest.
	ErrRequires = errors.New("image needs a newer imprint")
)

// Content is a blob stored as an ordered list of chunks.
type Content struct {
	Size   int64    `json:"size"`
	SHA256 string   `json:"sha256"`
	Chunks []string `json:"chunks"`
}

// ChunkLen is the length of chunk i of this content.
func (c *Content) ChunkLen(i int, chunkSize int64) int64 {
	off := int64(i) * chunkSize
	return min(chunkSize, c.Size-off)
}

// DataBytes is the length of the content's chunks that are not all
// zeros: what a root kept in RAM holds, and what a fetch of it moves at
// most.
func (c *Content) DataBytes(chunkSize int64) int64 {
	var n int64
	for i, sum := range c.Chunks {
		if sum != ZeroChunk {
			n += c.ChunkLen(i, chunkSize)
		}
	}
	return n
}

// Partition is one content partition: what a layout's image-role partition
// of the same name and type is written with.
type Partition struct {
	Name string `json:"name"`
	// Type is the GPT partition type GUID, upper case.
	Type    string   `json:"type"`
	Content *Content `json:"content"`
}

// Boot holds the boot artifacts an image carries.
type Boot struct {
	Kernel *Content `json:"kernel,omitempty"`
	Initrd *Content `json:"initrd,omitempty"`
	// Agent is imprint's agent initramfs for diskless and install boots,
	// made for this kernel (imprint initrd).
	Agent   *Content `json:"agent,omitempty"`
	Cmdline string   `json:"cmdline,omitempty"`
}

// Manifest describes one image version: its contents and boot files. The
// disk layout is not part of it (see DefaultLayout and layout.json).
type Manifest struct {
	Format int `json:"format"`
	// Requires names critical features: a reader that does not know one
	// must refuse the manifest.
	Requires   []string            `json:"requires,omitempty"`
	Name       string              `json:"name"`
	Version    string              `json:"version"`
	Created    time.Time           `json:"created"`
	ChunkSize  int64               `json:"chunk_size"`
	Partitions []Partition         `json:"partitions"`
	Boot       *Boot               `json:"boot,omitempty"`
	Loaders    map[string]*Content `json:"loaders,omitempty"`
	// Extensions is optional data a reader may skip; kept as read so a
	// copy keeps it.
	Extensions map[string]json.RawMessage `json:"extensions,omitempty"`

	// v1Layout is the layout a format-1 manifest embedded; nil for format 2.
	v1Layout *layout.Layout
}

// Partition returns the content partition named name.
func (m *Manifest) Partition(name string) (*Partition, bool) {
	for i := range m.Partitions {
		if m.Partitions[i].Name == name {
			return &m.Partitions[i], true
		}
	}
	return nil, false
}

// EmbeddedLayout is the layout a format-1 manifest carried, or false for
// format 2, whose layout lives beside the manifest.
func (m *Manifest) EmbeddedLayout() (layout.Layout, bool) {
	if m.v1Layout == nil {
		return layout.Layout{}, false
	}
	return cloneLayout(*m.v1Layout), true
}

// DefaultLayout is the layout to use when neither the caller nor the store
// gives one: a format-1 manifest's own, else DerivedLayout.
func (m *Manifest) DefaultLayout() layout.Layout {
	if l, ok := m.EmbeddedLayout(); ok {
		return l
	}
	return m.DerivedLayout()
}

// Default sizes of DerivedLayout's non-content partitions.
const (
	DefaultESPSize     = 512 << 20
	DefaultScratchSize = 64 << 20
	// DefaultStateSize is the state partition's: the node's persistent
	// paths (logs, systemd state, SSH host keys) under its name, for a
	// few node names per disk.
	DefaultStateSize = 256 << 20
)

// DefaultStateName is the local partition that keeps a node's persistent
// paths; the agent finds it by this GPT name on the root's disk.
const DefaultStateName = "state"

// DerivedLayout is the layout imprint's builder gives by default, made from
// the contents: a 512 MiB ESP, every content partition at its content size
// rounded up to 1 MiB, a 256 MiB ext4 state partition (persistent paths of
// node identity) and an optional ext4 scratch partition taking the rest.
func (m *Manifest) DerivedLayout() layout.Layout {
	l := layout.Layout{Partitions: []layout.Spec{{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: DefaultESPSize}}}
	used := map[string]bool{}
	for _, p := range m.Partitions {
		used[p.Name] = true
		l.Partitions = append(l.Partitions, layout.Spec{Name: p.Name, Type: p.Type, Role: layout.RoleImage, Size: roundMiB(p.Content.Size)})
	}
	if used["esp"] {
		l.Partitions[0].Name = uniqueName("esp", used)
	}
	if !used[DefaultStateName] {
		l.Partitions = append(l.Partitions, StateSpec())
		used[DefaultStateName] = true
	}
	l.Partitions = append(l.Partitions, layout.Spec{Name: uniqueName("scratch", used), Type: layout.TypeLinuxGeneric, Role: layout.RoleLocal, Size: DefaultScratchSize, Rest: true, Optional: true, FS: "ext4"})
	return l
}

// StateSpec is the default layout's state partition: created empty by
// deploy (ext4, label state; the agent formats it at first boot when the
// deploy had no mkfs.ext4) and never part of the image.
func StateSpec() layout.Spec {
	return layout.Spec{Name: DefaultStateName, Type: layout.TypeLinuxGeneric, Role: layout.RoleLocal, Size: DefaultStateSize, FS: "ext4"}
}

func uniqueName(name string, used map[string]bool) string {
	for base, k := name, 2; used[name]; k++ {
		name = fmt.Sprintf("%s%d", base, k)
	}
	used[name] = true
	return name
}

func roundMiB(n int64) int64 { return (n + layout.Align - 1) / layout.Align * layout.Align }

func cloneLayout(l layout.Layout) layout.Layout {
	return layout.Layout{Partitions: append([]layout.Spec(nil), l.Partitions...)}
}

// FitLayout checks a layout against the manifest and returns it ready to
// place: every content partition must appear as an image-role partition of
// the same name and type, no image-role partition may lack content, and
// each image partition holds its content. An image partition of size 0
// ("auto") gets the content size rounded up to 1 MiB. Errors name the
// partition and wrap layout.ErrBadLayout.
func (m *Manifest) FitLayout(l layout.Layout) (layout.Layout, error) {
	out := cloneLayout(l)
	for i := range out.Partitions {
		s := &out.Partitions[i]
		p, ok := m.Partition(s.Name)
		switch {
		case s.Role != layout.RoleImage && ok:
			return layout.Layout{}, fmt.Errorf("%w: partition %q is %s in the layout, but the image has content for it: make it an image partition", layout.ErrBadLayout, s.Name, s.Role)
		case s.Role != layout.RoleImage:
			continue
		case !ok:
			return layout.Layout{}, fmt.Errorf("%w: image partition %q: image %s:%s has no content of that name (it has %s)", layout.ErrBadLayout, s.Name, m.Name, m.Version, m.partitionNames())
		case s.Type != p.Type:
			return layout.Layout{}, fmt.Errorf("%w: image partition %q has type %s in the layout, the image's content is of type %s", layout.ErrBadLayout, s.Name, layout.TypeName(s.Type), layout.TypeName(p.Type))
		}
		need := roundMiB(p.Content.Size)
		if s.Size == 0 {
			s.Size = need
		}
		if s.Size < p.Content.Size {
			return layout.Layout{}, fmt.Errorf("%w: image partition %q: the layout gives %s, the content is %s", layout.ErrBadLayout, s.Name, layout.HumanSize(s.Size), layout.HumanSize(p.Content.Size))
		}
	}
	for _, p := range m.Partitions {
		if _, ok := out.Find(p.Name); !ok {
			return layout.Layout{}, fmt.Errorf("%w: the layout has no partition %q for the image's content of that name", layout.ErrBadLayout, p.Name)
		}
	}
	if err := out.Validate(); err != nil {
		return layout.Layout{}, err
	}
	return out, nil
}

func (m *Manifest) partitionNames() string {
	var n []string
	for _, p := range m.Partitions {
		n = append(n, fmt.Sprintf("%q", p.Name))
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

// RootPartition is the image partition a machine runs as its root: the one
// named "root", else the first of a root-* type, else the first image
// partition.
func (m *Manifest) RootPartition() (*Partition, error) {
	pick := func(ok func(Partition) bool) *Partition {
		for i, p := range m.Partitions {
			if p.Content != nil && ok(p) {
				return &m.Partitions[i]
			}
		}
		return nil
	}
	for _, ok := range []func(Partition) bool{
		func(p Partition) bool { return p.Name == "root" },
		func(p Partition) bool { return strings.HasPrefix(layout.TypeName(p.Type), "root-") },
		func(Partition) bool { return true },
	} {
		if p := pick(ok); p != nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("image %s:%s has no image partition to run as the root", m.Name, m.Version)
}

// Contents lists every stored blob of the image with a label, partitions
// first, then boot artifacts, then loaders by name.
func (m *Manifest) Contents() []NamedContent {
	var out []NamedContent
	for _, p := range m.Partitions {
		if p.Content != nil {
			out = append(out, NamedContent{"partition " + p.Name, p.Content})
		}
	}
	if m.Boot != nil {
		if m.Boot.Kernel != nil {
			out = append(out, NamedContent{"kernel", m.Boot.Kernel})
		}
		if m.Boot.Initrd != nil {
			out = append(out, NamedContent{"initrd", m.Boot.Initrd})
		}
		if m.Boot.Agent != nil {
			out = append(out, NamedContent{"agent", m.Boot.Agent})
		}
	}
	names := make([]string, 0, len(m.Loaders))
	for n := range m.Loaders {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if m.Loaders[n] != nil {
			out = append(out, NamedContent{"loader " + n, m.Loaders[n]})
		}
	}
	return out
}

// NamedContent is a blob with a label for messages.
type NamedContent struct {
	Label   string
	Content *Content
}

// Marshal gives the canonical bytes of the manifest; the image id is their
// SHA-256, so the encoding must not change for the same values. It always
// writes the current format, also for a manifest read as format 1 (whose
// layout it leaves out: that is a new image with a new id).
func (m *Manifest) Marshal() ([]byte, error) {
	c := *m
	c.Format = FormatVersion
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ID is the image id of manifest bytes.
func ID(raw []byte) string {
	s := sha256.Sum256(raw)
	return hex.EncodeToString(s[:])
}

// Parse decodes and validates manifest bytes, format 2 or format 1. It is
// strict: unknown fields, duplicate keys and keys that differ from a known
// one only in case are refused (encoding/json alone would take the last
// duplicate and match case-insensitively, so two readers could see two
// manifests in the same bytes), and so is a "requires" entry this code does
// not know. A manifest this code does not fully understand must not drive a
// write to a disk. Extensions are kept, not interpreted.
func Parse(raw []byte) (*Manifest, error) {
	var probe struct {
		Format   *int            `json:"format"`
		Requires json.RawMessage `json:"requires"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if probe.Format == nil {
		return nil, fmt.Errorf("%w: no \"format\" field", ErrFormat)
	}
	switch *probe.Format {
	case FormatVersion:
		// "requires" is checked before anything else so a manifest using a
		// feature's new fields is refused for the feature, not the fields.
		if len(probe.Requires) > 0 {
			var req []string
			if err := json.Unmarshal(probe.Requires, &req); err != nil {
				return nil, fmt.Errorf("%w: \"requires\" is not a list of names: %v", ErrFormat, err)
			}
			if err := checkRequires(req); err != nil {
				return nil, err
			}
		}
		var m Manifest
		if err := strictDecode(raw, &m); err != nil {
			return nil, err
		}
		if err := m.Validate(); err != nil {
			return nil, err
		}
		return &m, nil
	case FormatV1:
		var v manifestV1
		if err := strictDecode(raw, &v); err != nil {
			return nil, err
		}
		return v.convert()
	default:
		return nil, fmt.Errorf("%w: format version %d is not supported (this imprint reads versions %d and %d): upgrade imprint", ErrFormat, *probe.Format, FormatV1, FormatVersion)
	}
}

func checkRequires(req []string) error {
	known := KnownRequires()
	var missing []string
	for _, r := range req {
		if !slices.Contains(known, r) {
			missing = append(missing, r)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: this image needs imprint features %q; this imprint knows %q: upgrade imprint", ErrRequires, missing, known)
}

// strictDecode checks the keys of raw against v's type, then decodes it.
func strictDecode(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := checkKeys(dec, reflect.TypeOf(v), ""); err != nil {
		return fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the manifest", ErrFormat)
	}
	dec = json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return nil
}

var (
	timeType = reflect.TypeOf(time.Time{})
	rawType  = reflect.TypeOf(json.RawMessage{})
)

// checkKeys walks one JSON value and refuses, in every object, a key given
// twice or twice up to case, and in an object that decodes into a struct
// any key that is not exactly one of its fields. t is the Go type the
// value decodes into, nil where anything goes (extensions). Type mismatches
// are left to the decoder.
func checkKeys(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawType {
		t = nil
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if d == '[' {
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := checkKeys(dec, elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := dec.Token()
		return err
	}
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t == nil:
	case t.Kind() == reflect.Struct && t != timeType:
		fields = jsonFields(t, map[string]reflect.Type{})
	case t.Kind() == reflect.Map:
		elem = t.Elem()
	default:
		fields = map[string]reflect.Type{} // an object where none belongs: every key is unknown
	}
	seen := map[string]string{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := kt.(string)
		where := key
		if path != "" {
			where = path + "." + key
		}
		fk := foldKey(key)
		if prev, dup := seen[fk]; dup {
			if prev == key {
				return fmt.Errorf("key %q given twice", where)
			}
			return fmt.Errorf("keys %q and %q differ only in case", prev, where)
		}
		seen[fk] = key
		ft := elem
		if fields != nil {
			var ok bool
			if ft, ok = fields[key]; !ok {
				for name := range fields {
					if foldKey(name) == fk {
						return fmt.Errorf("unknown field %q (the field is spelt %q)", where, name)
					}
				}
				return fmt.Errorf("unknown field %q", where)
			}
		}
		if err := checkKeys(dec, ft, where); err != nil {
			return err
		}
	}
	_, err = dec.Token()
	return err
}

// jsonFields maps the JSON names of a struct's fields to their types,
// flattening embedded structs as encoding/json does.
func jsonFields(t reflect.Type, out map[string]reflect.Type) map[string]reflect.Type {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" {
			continue
		}
		if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
			jsonFields(f.Type, out)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		out[tag] = f.Type
	}
	return out
}

// foldKey maps every rune to the smallest of its case-folding orbit, so two
// keys encoding/json would match to each other map to the same string.
func foldKey(s string) string {
	var b strings.Builder
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// manifestV1 is format 1 as written: the whole layout, content inline.
type manifestV1 struct {
	Format     int           `json:"format"`
	Name       string        `json:"name"`
	Version    string        `json:"version"`
	Created    time.Time     `json:"created"`
	ChunkSize  int64         `json:"chunk_size"`
	Partitions []partitionV1 `json:"partitions"`
	Boot       *Boot         `json:"boot,omitempty"`
}

type partitionV1 struct {
	layout.Spec
	Content *Content `json:"content,omitempty"`
}

// convert checks a format-1 manifest by format 1's rules and gives the
// format-2 model with the layout kept as EmbeddedLayout.
func (v *manifestV1) convert() (*Manifest, error) {
	m := &Manifest{Format: FormatV1, Name: v.Name, Version: v.Version, Created: v.Created, ChunkSize: v.ChunkSize, Boot: v.Boot}
	l := layout.Layout{Partitions: make([]layout.Spec, len(v.Partitions))}
	for i, p := range v.Partitions {
		l.Partitions[i] = p.Spec
		switch {
		case p.Role == layout.RoleImage && p.Content == nil:
			return nil, fmt.Errorf("%w: image partition %q has no content", ErrFormat, p.Name)
		case p.Role != layout.RoleImage && p.Content != nil:
			return nil, fmt.Errorf("%w: %s partition %q carries content", ErrFormat, p.Role, p.Name)
		case p.Content == nil:
			continue
		}
		if p.Content.Size > p.Size {
			return nil, fmt.Errorf("%w: partition %q: content of %d bytes is larger than the partition (%d)", ErrFormat, p.Name, p.Content.Size, p.Size)
		}
		m.Partitions = append(m.Partitions, Partition{Name: p.Name, Type: p.Type, Content: p.Content})
	}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	m.v1Layout = &l
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// MinChunkSize and MaxChunkSize bound an image's chunk size (a power of
// two): every chunk boundary of any image is a multiple of MinChunkSize.
const (
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
)

// Validate checks everything about a manifest that does not need the chunks.
func (m *Manifest) Validate() error {
	if m.Format != FormatVersion && (m.Format != FormatV1 || m.v1Layout == nil) {
		return fmt.Errorf("%w: format version %d", ErrFormat, m.Format)
	}
	if err := checkRequires(m.Requires); err != nil {
		return err
	}
	if err := ValidName(m.Name); err != nil {
		return fmt.Errorf("%w: image name: %v", ErrFormat, err)
	}
	if err := ValidName(m.Version); err != nil {
		return fmt.Errorf("%w: image version: %v", ErrFormat, err)
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize || m.ChunkSize&(m.ChunkSize-1) != 0 {
		return fmt.Errorf("%w: chunk size %d is not a power of two between 64 KiB and 64 MiB", ErrFormat, m.ChunkSize)
	}
	if len(m.Partitions) > MaxPartitions {
		return fmt.Errorf("%w: %d partitions, a GPT holds %d", ErrFormat, len(m.Partitions), MaxPartitions)
	}
	seen := map[string]bool{}
	for i, p := range m.Partitions {
		where := fmt.Sprintf("partition %d (%q)", i+1, p.Name)
		switch {
		case p.Name == "":
			return fmt.Errorf("%w: %s has no name", ErrFormat, where)
		case utf8.RuneCountInString(p.Name) > maxPartitionName || !utf8.ValidString(p.Name):
			return fmt.Errorf("%w: %s: the name is not at most %d characters of UTF-8", ErrFormat, where, maxPartitionName)
		case seen[p.Name]:
			return fmt.Errorf("%w: %s: name used twice", ErrFormat, where)
		case p.Content == nil:
			return fmt.Errorf("%w: %s has no content", ErrFormat, where)
		}
		seen[p.Name] = true
		if g, err := layout.TypeGUID(p.Type); err != nil || g != p.Type {
			return fmt.Errorf("%w: %s: type %q is not an upper-case GUID", ErrFormat, where, p.Type)
		}
		if p.Content.Size%512 != 0 {
			return fmt.Errorf("%w: partition %q: content size %d is not a multiple of 512", ErrFormat, p.Name, p.Content.Size)
		}
		if err := p.Content.validate(m.ChunkSize, MaxPartition); err != nil {
			return fmt.Errorf("%w: partition %q: %v", ErrFormat, p.Name, err)
		}
	}
	if m.Boot != nil {
		for _, c := range []NamedContent{{"kernel", m.Boot.Kernel}, {"initrd", m.Boot.Initrd}, {"agent", m.Boot.Agent}} {
			if c.Content == nil {
				continue
			}
			if err := c.Content.validate(m.ChunkSize, MaxBootFile); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrFormat, c.Label, err)
			}
		}
	}
	for name, c := range m.Loaders {
		if !slices.Contains(LoaderNames(), name) {
			return fmt.Errorf("%w: loader name %q is not one this imprint knows (%s)", ErrFormat, name, strings.Join(LoaderNames(), ", "))
		}
		if c == nil {
			return fmt.Errorf("%w: loader %s has no content", ErrFormat, name)
		}
		if err := c.validate(m.ChunkSize, MaxLoaderSize); err != nil {
			return fmt.Errorf("%w: loader %s: %v", ErrFormat, name, err)
		}
	}
	for name := range m.Extensions {
		if name == "" {
			return fmt.Errorf("%w: an extension with an empty name", ErrFormat)
		}
	}
	return nil
}

// validate checks a content's shape; the size is compared with the cap
// before any arithmetic, so nothing below can overflow.
func (c *Content) validate(chunkSize, maxSize int64) error {
	if c.Size < 0 {
		return fmt.Errorf("negative size")
	}
	if c.Size > maxSize {
		return fmt.Errorf("size %d is more than the limit of %d bytes", c.Size, maxSize)
	}
	if !IsHash(c.SHA256) {
		return fmt.Errorf("sha256 %q is not 64 lower-case hex digits", c.SHA256)
	}
	want := (c.Size + chunkSize - 1) / chunkSize
	if int64(len(c.Chunks)) != want {
		return fmt.Errorf("%d chunks listed, %d bytes need %d", len(c.Chunks), c.Size, want)
	}
	for i, h := range c.Chunks {
		if h != ZeroChunk && !IsHash(h) {
			return fmt.Errorf("chunk %d: %q is neither a SHA-256 nor %q", i, h, ZeroChunk)
		}
	}
	return nil
}

// IsHash reports whether s is a chunk or content name: 64 lower-case hex
// digits.
func IsHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ValidName accepts names and versions that are safe as one path component
// in a store and in a URL.
func ValidName(s string) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if len(s) > 128 {
		return fmt.Errorf("%q is longer than 128 characters", s)
	}
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "-") {
		return fmt.Errorf("%q starts with %q", s, s[:1])
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+') {
			return fmt.Errorf("%q has %q; use letters, digits and . _ - +", s, c)
		}
	}
	return nil
}

// Resolved is a manifest fetched from a source with its id.
type Resolved struct {
	Manifest  *Manifest
	Raw       []byte
	ID        string
	Signature []byte // nil when the source holds none
	// VerifiedBy is the trusted key the signature verified under
	// (Trust.Check), "" when it was not checked.
	VerifiedBy string `json:"-"`
	// Layout is the source's default layout for the image (layout.json),
	// nil when it has none. It is outside the id and the signature.
	Layout *layout.Layout
}

// DefaultLayout is the layout a deploy uses unless told otherwise: the
// source's layout.json, else the manifest's own default.
func (r *Resolved) DefaultLayout() layout.Layout {
	if r.Layout != nil {
		return cloneLayout(*r.Layout)
	}
	return r.Manifest.DefaultLayout()
}
