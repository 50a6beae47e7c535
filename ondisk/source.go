package ondisk

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"sync"

	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/chunkcache"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
	"github.com/klauspost/compress/zstd"
)

// SignatureFile is the manifest's signature on a deployed disk's ESP, kept
// so the disk can pass its image on (serve --disk, export) still signed.
const SignatureFile = ManifestFile + image.SignatureSuffix

// bootDir is where the boot loader install keeps an image's kernel files.
const bootDir = "EFI/imprint"

// DiskSource serves the image a deployed disk holds, read straight from its
// partitions: an store.Source like a store, so a deployed node can feed
// other deploys (the tree) and be exported. Every chunk is hashed before it
// is handed out; one that no longer matches the manifest is refused with
// ErrDrifted, never served.
type DiskSource struct {
	path   string
	dev    *disk.Disk
	od     *OnDisk
	sig    []byte
	chunks map[string][]chunkLoc
	places []place // every chunk of every content, zero ones too
	// missing are boot files of the image that are not on the ESP.
	missing []missingFile
	enc     *zstd.Encoder

	mu    sync.Mutex        // guards the ESP (go-diskfs is not safe for concurrent use) and files
	files map[string][]byte // boot files read from the ESP, by path

	// served keeps compressed chunks served, by name, and runs one
	// read-check-compress per chunk for all the requests that want it.
	served *chunkcache.Cache[string]

	// avail, for a disk still being deployed, says which chunks are
	// written; nil for a completed disk. later are the chunks of boot
	// files, which such a disk gets only at the end.
	avail func(chunkLoc) bool
	later map[string]bool
}

type missingFile struct {
	path    string
	content *image.Content
}

// place is one chunk of one content, for checks that must cover every
// place (export), not just one good copy of each chunk (serving).
type place struct {
	content string // label of the content ("partition root", "vmlinuz")
	sum     string // chunk hash or image.ZeroChunk
	loc     chunkLoc
}

// chunkLoc is one place a chunk's bytes live on the disk: a byte range of a
// partition, or of a file on the ESP.
type chunkLoc struct {
	label string // for messages: "partition root chunk 7"
	off   int64  // disk offset, or offset within file
	n     int64
	file  string // ESP file, "" for a partition range
	part  string // partition name, for a partition range
	idx   int    // chunk index within its content
}

// OpenDiskSource opens a deployed disk (block device or image file)
// read-only. Only a disk whose deploy completed is served: a half-written
// disk has chunks that are not there yet.
func OpenDiskSource(p string) (*DiskSource, error) {
	return OpenDiskSlot(p, "")
}

// OpenDiskSlot is OpenDiskSource for the image in root slot slot ("" the
// active one).
func OpenDiskSlot(p, slot string) (*DiskSource, error) {
	dev, err := disk.OpenDisk(p, disk.OpenOptions{})
	if err != nil {
		return nil, err
	}
	s, err := newDiskSource(p, dev, slot)
	if err != nil {
		dev.Close()
		return nil, err
	}
	return s, nil
}

func newDiskSource(p string, dev *disk.Disk, slot string) (*DiskSource, error) {
	od, err := ReadDisk(dev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if err := od.UseSlot(slot); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if od.State.Status != StatusComplete {
		return nil, fmt.Errorf("%s: %w: its deploy of %s:%s did not complete (status %q)", p, ErrNotDeployed, od.State.Name, od.State.Version, od.State.Status)
	}
	m := od.Manifest
	s := &DiskSource{path: p, dev: dev, od: od, chunks: map[string][]chunkLoc{}, files: map[string][]byte{}, served: newServed()}
	if sf := od.Slot.SignatureFile(); od.ESP.Exists(sf) {
		if s.sig, err = od.ESP.ReadFile(sf); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", p, sf, err)
		}
		// A signature that cannot be this manifest's is not passed on
		// (served or exported); the disk is then an unsigned image.
		r := image.Resolved{Raw: od.ManifestRaw, Signature: s.sig}
		s.sig = r.SignatureToKeep()
	}
	for _, mp := range m.Partitions {
		if mp.Content == nil {
			continue
		}
		placed, ok := od.State.Table.Find(od.State.PartitionOf(mp.Name))
		if !ok || !inGPT(od.GPT, placed, mp.Content.Size) {
			return nil, fmt.Errorf("%s: %w: partition %s is missing or was moved in the GPT", p, ErrDrifted, mp.Name)
		}
		s.add(mp.Content, m.ChunkSize, mp.Name, placed.Start, "")
	}
	// A disk deployed without a boot loader, or before the agent and the
	// loaders were always written, lacks some of these files; their chunks
	// are then not served from here, and export needs them in the target
	// store already.
	for _, f := range imageFiles(m) {
		if od.ESP.Exists(f.path) {
			s.add(f.c, m.ChunkSize, f.label, 0, f.path)
		} else {
			s.missing = append(s.missing, missingFile{f.path, f.c})
		}
	}
	s.enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return s, nil
}

func inGPT(gpt []layout.GPTPartition, p layout.Placed, size int64) bool {
	for _, g := range gpt {
		if g.GUID == p.GUID {
			return g.Start == p.Start && g.Len >= size
		}
	}
	return false
}

// add registers the chunks of one content: a partition (file == "",
// name is the partition's) or a boot file on the ESP.
func (s *DiskSource) add(c *image.Content, chunkSize int64, name string, base int64, file string) {
	label, part := name, ""
	if file == "" {
		label, part = "partition "+name, name
	}
	for i, sum := range c.Chunks {
		l := chunkLoc{
			label: fmt.Sprintf("%s chunk %d", label, i),
			off:   base + int64(i)*chunkSize,
			n:     c.ChunkLen(i, chunkSize),
			file:  file,
			part:  part,
			idx:   i,
		}
		s.places = append(s.places, place{content: label, sum: sum, loc: l})
		if sum != image.ZeroChunk {
			s.chunks[sum] = append(s.chunks[sum], l)
		}
	}
}

// String names the source in messages.
func (s *DiskSource) String() string { return "disk " + s.path }

// Close releases the disk.
func (s *DiskSource) Close() error {
	s.enc.Close()
	return s.dev.Close()
}

// Resolved is the image the disk holds, with its signature if it has one.
func (s *DiskSource) Resolved() *image.Resolved {
	return &image.Resolved{Manifest: s.od.Manifest, Raw: s.od.ManifestRaw, ID: s.od.State.ImageID, Signature: s.sig}
}

// Index implements store.Source: one image, one version.
func (s *DiskSource) Index(ctx context.Context) (*store.Index, error) {
	m := s.od.Manifest
	return &store.Index{Images: map[string][]store.IndexEntry{
		m.Name: {{Version: m.Version, ID: s.od.State.ImageID, Created: m.Created}},
	}}, nil
}

func (s *DiskSource) holds(name, version string) error {
	m := s.od.Manifest
	if name != m.Name || version != m.Version {
		return fmt.Errorf("image %s:%s: %w on %s (it holds %s:%s)", name, version, store.ErrNotFound, s.path, m.Name, m.Version)
	}
	return nil
}

// Manifest implements store.Source with the bytes recorded on the disk, so
// the image id is the master's.
func (s *DiskSource) Manifest(ctx context.Context, name, version string) ([]byte, error) {
	if err := s.holds(name, version); err != nil {
		return nil, err
	}
	return s.od.ManifestRaw, nil
}

// Layout implements store.LayoutSource: the layout the disk was
// partitioned from, so a deploy from this disk makes the same shape.
func (s *DiskSource) Layout(ctx context.Context, name, version string) ([]byte, error) {
	if err := s.holds(name, version); err != nil {
		return nil, err
	}
	if s.od.Layout == nil {
		return nil, fmt.Errorf("layout of %s:%s: %w on %s", name, version, store.ErrNotFound, s.path)
	}
	return layout.MarshalJSON(*s.od.Layout)
}

// Signature implements store.Source.
func (s *DiskSource) Signature(ctx context.Context, name, version string) ([]byte, error) {
	if err := s.holds(name, version); err != nil {
		return nil, err
	}
	if s.sig == nil {
		return nil, fmt.Errorf("signature of %s:%s: %w on %s", name, version, store.ErrNotFound, s.path)
	}
	return s.sig, nil
}

// Chunk implements store.Source: the chunk's bytes as they are on the disk
// now, checked against their name and compressed. A chunk listed in several
// places is served from the first place that still matches.
//
// Children of one node ask for the same chunks at about the same time, so
// one read-check-compress serves all of them: concurrent requests for a
// chunk share one computation, and recent results are kept (recentBytes,
// least recently used out first).
// What is kept was checked when it was read, and a chunk's bytes are its
// name, so handing them out again is always right.
func (s *DiskSource) Chunk(ctx context.Context, sum string) ([]byte, error) {
	b, _, err := s.served.Get(ctx, sum, func(ctx context.Context) ([]byte, error) {
		// Not the caller's context: other requests wait for this result.
		raw, err := s.RawChunk(context.WithoutCancel(ctx), sum)
		if err != nil {
			return nil, err
		}
		return image.Compress(s.enc, raw), nil
	})
	return b, err
}

// recentBytes bounds the compressed chunks a DiskSource keeps; a chunk
// larger than a quarter of it is served but not kept.
const recentBytes = 64 << 20

func newServed() *chunkcache.Cache[string] {
	return chunkcache.New[string](chunkcache.Options{MaxBytes: recentBytes, MaxEntry: recentBytes / 4})
}

// RawChunk is Chunk without compression.
func (s *DiskSource) RawChunk(ctx context.Context, sum string) ([]byte, error) {
	locs, ok := s.chunks[sum]
	if !ok && s.later[sum] {
		return nil, fmt.Errorf("chunk %s (a boot file) on %s: %w", sum, s.path, store.ErrNotYet)
	}
	if !ok {
		return nil, fmt.Errorf("chunk %s: %w on %s", sum, store.ErrNotFound, s.path)
	}
	var drifted []string
	notYet := false
	for _, l := range locs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if s.avail != nil && !s.avail(l) {
			notYet = true
			continue
		}
		b, err := s.read(l)
		if err != nil {
			return nil, fmt.Errorf("chunk %s (%s) on %s: %w", sum, l.label, s.path, err)
		}
		if image.HashBytes(b) == sum {
			return b, nil
		}
		drifted = append(drifted, l.label)
	}
	if notYet && len(drifted) == 0 {
		return nil, fmt.Errorf("chunk %s on %s: %w", sum, s.path, store.ErrNotYet)
	}
	// Both sentinels: deploy's callers act on ErrDrifted, a server that
	// knows only the image package on ErrChecksum.
	return nil, fmt.Errorf("chunk %s on %s: %w (%w): %v no longer hashes to its name", sum, s.path, ErrDrifted, image.ErrChecksum, drifted)
}

func (s *DiskSource) read(l chunkLoc) ([]byte, error) {
	if l.file == "" {
		b := make([]byte, l.n)
		if _, err := s.dev.ReadAt(b, l.off); err != nil {
			return nil, err
		}
		return b, nil
	}
	f, err := s.espFile(l.file)
	if err != nil {
		return nil, err
	}
	if l.off+l.n > int64(len(f)) {
		return nil, fmt.Errorf("ESP %s: %w: %d bytes, the manifest needs %d", l.file, ErrDrifted, len(f), l.off+l.n)
	}
	return bytes.Clone(f[l.off : l.off+l.n]), nil
}

// espFile reads a boot file from the ESP once and keeps it: its chunks are
// asked for one by one. The result must not be modified.
func (s *DiskSource) espFile(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.files[name]; ok {
		return f, nil
	}
	f, err := s.od.ESP.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("ESP %s: %w", name, err)
	}
	s.files[name] = f
	return f, nil
}

// OpenLive serves a disk while it is being deployed (cut-through):
// chunks the deploy has written are served, checked like any other; the
// rest are store.ErrNotYet, so a client waits for them or asks elsewhere.
// It reads through its own read-only descriptor, which stays valid after
// the deploy closes its own. Boot files are written last and are served
// once the deploy has completed, by a DiskSource opened then.
func OpenLive(p string, img *image.Resolved, lay *layout.Layout, st *State, done map[string]*copier.Bitmap) (*DiskSource, error) {
	t := st.Table
	dev, err := disk.OpenDisk(p, disk.OpenOptions{})
	if err != nil {
		return nil, err
	}
	m := img.Manifest
	s := &DiskSource{
		path: p, dev: dev, sig: img.Signature, chunks: map[string][]chunkLoc{}, files: map[string][]byte{}, served: newServed(),
		od: newOnDisk(&Slot{Manifest: m, ManifestRaw: img.Raw, Layout: lay, State: &State{ImageID: img.ID, Name: m.Name, Version: m.Version, Status: StatusWriting, Table: t, Slot: st.Slot}}),
		avail: func(l chunkLoc) bool {
			bm := done[l.part]
			return bm != nil && bm.Has(l.idx)
		},
	}
	for _, mp := range m.Partitions {
		if mp.Content == nil {
			continue
		}
		placed, ok := t.Find(st.PartitionOf(mp.Name))
		if !ok {
			dev.Close()
			return nil, fmt.Errorf("partition %s is not in the table", st.PartitionOf(mp.Name))
		}
		s.add(mp.Content, m.ChunkSize, mp.Name, placed.Start, "")
	}
	s.later = map[string]bool{}
	for _, c := range m.Loaders {
		for _, sum := range c.Chunks {
			s.later[sum] = true
		}
	}
	if b := m.Boot; b != nil {
		for _, c := range []*image.Content{b.Kernel, b.Initrd, b.Agent} {
			if c != nil {
				for _, sum := range c.Chunks {
					s.later[sum] = true
				}
			}
		}
	}
	if s.enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1)); err != nil {
		dev.Close()
		return nil, err
	}
	return s, nil
}

// imageFile is one file of the image that a deployed disk keeps on its
// ESP, as the image has it.
type imageFile struct {
	path  string // on the ESP, without a leading slash
	label string // for messages: "vmlinuz", "loader ipxe.efi"
	c     *image.Content
}

// imageFiles are the ESP files that hold the image's boot files (kernel,
// initrd, agent) and its loaders (kept unpatched under LoadersDir).
func imageFiles(m *image.Manifest) []imageFile {
	var out []imageFile
	if b := m.Boot; b != nil {
		dir := path.Join(bootDir, m.Version)
		for _, f := range []struct {
			c    *image.Content
			name string
		}{{b.Kernel, "vmlinuz"}, {b.Initrd, "initrd.img"}, {b.Agent, "agent.img"}} {
			if f.c != nil {
				out = append(out, imageFile{path.Join(dir, f.name), f.name, f.c})
			}
		}
	}
	for _, name := range sortedLoaders(m) {
		out = append(out, imageFile{LoadersDir + "/" + name, "loader " + name, m.Loaders[name]})
	}
	return out
}
