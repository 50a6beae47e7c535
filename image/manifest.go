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
	"sort"
	"strings"
	"time"

	"github.com/imprint-dev/imprint/layout"
)

// FormatVersion is the manifest format this code writes and the only one it
// reads. docs/format.md describes it.
const FormatVersion = 1

// DefaultChunkSize balances dedup granularity against per-chunk overhead.
const DefaultChunkSize = 4 << 20

// ZeroChunk marks an all-zero chunk in a chunk list; it is never stored.
const ZeroChunk = "zero"

// Sentinel errors callers act on.
var (
	ErrFormat   = errors.New("malformed manifest")
	ErrChecksum = errors.New("checksum mismatch")
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

// Partition is a layout entry plus, for image partitions, its content.
type Partition struct {
	layout.Spec
	Content *Content `json:"content,omitempty"`
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

// Manifest describes one image version completely.
type Manifest struct {
	Format     int         `json:"format"`
	Name       string      `json:"name"`
	Version    string      `json:"version"`
	Created    time.Time   `json:"created"`
	ChunkSize  int64       `json:"chunk_size"`
	Partitions []Partition `json:"partitions"`
	Boot       *Boot       `json:"boot,omitempty"`
	// Loaders are the boot loader binaries the image carries, by name
	// (the Loader* constants): everything that lands on an ESP or is sent
	// to a PXE client, so it is signed with the image.
	Loaders map[string]*Content `json:"loaders,omitempty"`
}

// Loader names: the keys of Manifest.Loaders. GRUB's BIOS images are the
// bytes grub-mkimage made, before the per-disk patch (blocklist, kernel
// sector) a deploy applies.
const (
	LoaderSystemdBoot  = "systemd-bootx64.efi"
	LoaderIPXEEFI      = "ipxe.efi"
	LoaderIPXEBIOS     = "undionly.kpxe"
	LoaderGrubEFI      = "grubx64.efi"
	LoaderGrubBIOSBoot = "grub-i386-pc-boot.img"
	LoaderGrubBIOSCore = "grub-i386-pc-core.img"
)

// Size caps, under the names the format-2 manifest uses; they bound what a
// manifest can make a reader allocate or send.
const (
	MaxBootFile = 1 << 30 // kernel, initrd, agent
	MaxLoader   = 64 << 20
)

// MaxLoaderSize caps one loader binary.
const MaxLoaderSize = MaxLoader

// Layout is the GPT layout the image wants.
func (m *Manifest) Layout() layout.Layout {
	l := layout.Layout{Partitions: make([]layout.Spec, len(m.Partitions))}
	for i, p := range m.Partitions {
		l.Partitions[i] = p.Spec
	}
	return l
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
		out = append(out, NamedContent{"loader " + n, m.Loaders[n]})
	}
	return out
}

// NamedContent is a blob with a label for messages.
type NamedContent struct {
	Label   string
	Content *Content
}

// Marshal gives the canonical bytes of the manifest; the image id is their
// SHA-256, so the encoding must not change for the same values.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
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

// Parse decodes and validates manifest bytes. Unknown fields and unknown
// format versions are errors: a manifest this code does not fully understand
// must not drive a write to a disk.
func Parse(raw []byte) (*Manifest, error) {
	var probe struct {
		Format *int `json:"format"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if probe.Format == nil {
		return nil, fmt.Errorf("%w: no \"format\" field", ErrFormat)
	}
	if *probe.Format != FormatVersion {
		return nil, fmt.Errorf("%w: format version %d is not supported (this imprint reads version %d)", ErrFormat, *probe.Format, FormatVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the manifest", ErrFormat)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks everything about a manifest that does not need the chunks.
func (m *Manifest) Validate() error {
	if m.Format != FormatVersion {
		return fmt.Errorf("%w: format version %d", ErrFormat, m.Format)
	}
	if err := ValidName(m.Name); err != nil {
		return fmt.Errorf("%w: image name: %v", ErrFormat, err)
	}
	if err := ValidName(m.Version); err != nil {
		return fmt.Errorf("%w: image version: %v", ErrFormat, err)
	}
	if m.ChunkSize < 64<<10 || m.ChunkSize > 64<<20 || m.ChunkSize&(m.ChunkSize-1) != 0 {
		return fmt.Errorf("%w: chunk size %d is not a power of two between 64 KiB and 64 MiB", ErrFormat, m.ChunkSize)
	}
	if err := m.Layout().Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrFormat, err)
	}
	for _, p := range m.Partitions {
		switch {
		case p.Role == layout.RoleImage && p.Content == nil:
			return fmt.Errorf("%w: image partition %q has no content", ErrFormat, p.Name)
		case p.Role != layout.RoleImage && p.Content != nil:
			return fmt.Errorf("%w: %s partition %q carries content", ErrFormat, p.Role, p.Name)
		case p.Content == nil:
			continue
		}
		if p.Content.Size > p.Size {
			return fmt.Errorf("%w: partition %q: content of %d bytes is larger than the partition (%d)", ErrFormat, p.Name, p.Content.Size, p.Size)
		}
		if p.Content.Size%512 != 0 {
			return fmt.Errorf("%w: partition %q: content size %d is not a multiple of 512", ErrFormat, p.Name, p.Content.Size)
		}
	}
	for n, c := range m.Loaders {
		if err := ValidName(n); err != nil {
			return fmt.Errorf("%w: loader name: %v", ErrFormat, err)
		}
		if c == nil {
			return fmt.Errorf("%w: loader %s has no content", ErrFormat, n)
		}
		if c.Size > MaxLoaderSize {
			return fmt.Errorf("%w: loader %s: %d bytes is more than the %d a loader may have", ErrFormat, n, c.Size, MaxLoaderSize)
		}
	}
	for _, c := range m.Contents() {
		if err := c.Content.validate(m.ChunkSize); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrFormat, c.Label, err)
		}
	}
	return nil
}

func (c *Content) validate(chunkSize int64) error {
	if c.Size < 0 {
		return fmt.Errorf("negative size")
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
}
