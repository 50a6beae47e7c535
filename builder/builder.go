// Package builder turns inputs (a root filesystem directory, raw partition
// images, a whole-disk image) into an image in a store.
package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/builder/diskimage"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/internal/tmpdir"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/store"
)

// ErrInput says the build inputs do not fit together.
var ErrInput = errors.New("bad build input")

// PartitionFile is a ready raw partition image given as NAME=FILE.
type PartitionFile struct {
	Name, Path string
}

// Options are the inputs of one build.
type Options struct {
	Store   *store.Dir
	Name    string
	Version string // empty: derived from the content

	Rootfs     string          // directory made into an ext4 root partition
	RootSize   int64           // size of that filesystem; 0 estimates it
	Partitions []PartitionFile // ready partition images
	DiskImage  string          // whole GPT disk image (plain, .zst, .xz, .gz)
	Bmap       string          // bmaptool map for DiskImage

	Layout *layout.Layout // nil: the default layout

	Kernel, Initrd, Cmdline string
	// NoKernel says an image built from Rootfs is meant to carry no kernel;
	// without it a tree with none is an error.
	NoKernel bool
	Agent    string // agent initramfs (imprint initrd) to carry
	// Loaders are loader binaries given as NAME=FILE (--loader); the rest
	// come from the build host's Debian packages under LoaderRoot ("" is
	// /), and are left out, with a note, where the host lacks them.
	Loaders    map[string]string
	LoaderRoot string
	ChunkSize  int64
	// PieceSize is the swarm's piece length (the swarm-pieces manifest
	// extension): 0 is image.DefaultPieceLength when the chunks are
	// larger; negative, or the chunk size, gives no extension (the
	// swarm's pieces are the chunks). Either is raised (doubled) until
	// the torrent has at most image.MaxSwarmPieces pieces (a given size
	// with a note in Result.Notes), up to no extension.
	PieceSize int64
	// Base (NAME:VERSION, or NAME for the newest in Store) builds the
	// Rootfs image on that version's root filesystem instead of a fresh
	// mkfs: few chunks change, so nodes sync fast, but the result is not
	// reproducible from the tree alone (buildOnBase).
	Base   string
	TmpDir string
	// Progress gets what is being stored and how far it is.
	Progress func(label string, done, total int64)
	// Signer, if set, signs the manifest as stored, so clients that trust
	// its public key accept the image.
	Signer *image.Signer
}

// Result is a built image.
type Result struct {
	ID       string
	Manifest *image.Manifest
	Layout   layout.Layout // the default layout stored beside the manifest
	Stats    image.StoreStats
	Boot     BootReport
	Signed   bool      // a signature by Options.Signer is in the store
	Base     *BaseInfo // the version a --base build grew from
	// Notes say what the image lacks and why (a loader the build host
	// does not have), for the user to read.
	Notes []string
}

// DefaultLayout is used when no --layout is given: an ESP big enough for two
// kernels and initrds, the root image, the state partition of node identity
// (image.StateSpec) and scratch space if the disk has room.
func DefaultLayout() layout.Layout {
	return layout.Layout{Partitions: []layout.Spec{
		{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: image.DefaultESPSize},
		{Name: "root", Type: layout.TypeRootX86_64, Role: layout.RoleImage},
		image.StateSpec(),
		{Name: "scratch", Type: layout.TypeLinuxGeneric, Role: layout.RoleLocal, Size: image.DefaultScratchSize, Rest: true, Optional: true, FS: "ext4"},
	}}
}

type source struct {
	label string
	r     io.ReaderAt
	size  int64
}

// Build makes the image and stores it.
func Build(ctx context.Context, o Options) (*Result, error) {
	if err := image.ValidName(o.Name); err != nil {
		return nil, fmt.Errorf("%w: --name: %v", ErrInput, err)
	}
	if o.Version != "" {
		if err := image.ValidName(o.Version); err != nil {
			return nil, fmt.Errorf("%w: --version: %v", ErrInput, err)
		}
	}
	var onBase *base
	if o.Base != "" {
		if o.Rootfs == "" {
			return nil, fmt.Errorf("%w: --base builds a --rootfs tree on an earlier version; give --rootfs", ErrInput)
		}
		var err error
		if onBase, err = resolveBase(ctx, o); err != nil {
			return nil, err
		}
		// Chunks line up with the base's only at its chunk size.
		if o.ChunkSize == 0 {
			o.ChunkSize = onBase.manifest.ChunkSize
		} else if o.ChunkSize != onBase.manifest.ChunkSize {
			return nil, fmt.Errorf("%w: --chunk-size %d differs from --base %s's %d: no chunk would be shared", ErrInput, o.ChunkSize, o.Base, onBase.manifest.ChunkSize)
		}
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = image.DefaultChunkSize
	}
	pieceSize, err := pieceLength(o.PieceSize, o.ChunkSize)
	if err != nil {
		return nil, err
	}
	if o.DiskImage != "" && (o.Rootfs != "" || len(o.Partitions) > 0 || o.Layout != nil) {
		return nil, fmt.Errorf("%w: --disk-image brings its own layout and content; it does not combine with --rootfs, --partition or --layout", ErrInput)
	}
	if o.DiskImage == "" && o.Rootfs == "" && len(o.Partitions) == 0 {
		return nil, fmt.Errorf("%w: give --rootfs, --partition or --disk-image", ErrInput)
	}
	tmpdir.Sweep(o.TmpDir) // best effort: what killed builds and deploys left behind
	td, err := tmpdir.New(o.TmpDir, "build")
	if err != nil {
		return nil, err
	}
	defer td.Remove()
	tmp := td.Path
	if o.Rootfs != "" {
		st, err := os.Stat(o.Rootfs)
		if err != nil {
			return nil, fmt.Errorf("%w: --rootfs: %v", ErrInput, err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("%w: --rootfs %s is not a directory", ErrInput, o.Rootfs)
		}
	}
	// Before the slow filesystem build: a tree without a kernel fails fast.
	boot, report, err := bootArtifacts(o, tmp)
	if err != nil {
		return nil, err
	}

	var (
		lay     layout.Layout
		content = map[string]source{}
		created time.Time
		digests []string
	)
	if o.DiskImage != "" {
		di, err := diskimage.Open(ctx, o.DiskImage, o.Bmap, tmp)
		if err != nil {
			return nil, err
		}
		defer di.Close()
		if err := di.VerifyBmap(ctx); err != nil {
			return nil, err
		}
		lay, content = fromDisk(di, o.DiskImage)
		st, err := os.Stat(o.DiskImage)
		if err != nil {
			return nil, err
		}
		created = st.ModTime()
	} else {
		lay = DefaultLayout()
		if o.Layout != nil {
			lay = *o.Layout
		}
		if o.Rootfs != "" {
			rootName, err := rootPartition(lay)
			if err != nil {
				return nil, err
			}
			var (
				src    source
				digest string
				newest time.Time
			)
			if onBase != nil {
				src, digest, newest, err = buildOnBase(ctx, o, onBase, rootName, tmp)
			} else {
				src, digest, newest, err = buildRootfs(ctx, o, tmp)
			}
			if err != nil {
				return nil, err
			}
			if c, ok := src.r.(io.Closer); ok {
				defer c.Close()
			}
			content[rootName] = src
			created, digests = newest, append(digests, digest)
		}
		for _, pf := range o.Partitions {
			f, err := os.Open(pf.Path)
			if err != nil {
				return nil, fmt.Errorf("%w: --partition %s=%s: %v", ErrInput, pf.Name, pf.Path, err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return nil, err
			}
			if _, dup := content[pf.Name]; dup {
				return nil, fmt.Errorf("%w: partition %q is given twice", ErrInput, pf.Name)
			}
			content[pf.Name] = source{label: pf.Name, r: f, size: st.Size()}
			if st.ModTime().After(created) {
				created = st.ModTime()
			}
			if o.Layout == nil && o.Rootfs == "" {
				lay = addPartition(lay, pf.Name)
			}
		}
		if o.Layout == nil && o.Rootfs == "" {
			lay = dropEmptyRoot(lay, content)
		}
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err == nil {
			created = time.Unix(sec, 0)
		}
	}
	created = created.UTC().Truncate(time.Second)

	m := &image.Manifest{Format: image.FormatVersion, Name: o.Name, Created: created, ChunkSize: o.ChunkSize}
	var stats image.StoreStats
	var partSrc []source // by m.Partitions
	for i := range lay.Partitions {
		spec := &lay.Partitions[i]
		src, has := content[spec.Name]
		switch {
		case spec.Role == layout.RoleImage && !has:
			return nil, fmt.Errorf("%w: image partition %q has no content: give --partition %s=FILE", ErrInput, spec.Name, spec.Name)
		case spec.Role != layout.RoleImage && has:
			return nil, fmt.Errorf("%w: partition %q has role %s; only image partitions take content", ErrInput, spec.Name, spec.Role)
		case has:
			if src.size%512 != 0 {
				return nil, fmt.Errorf("%w: partition %q: %s is %d bytes, not a multiple of 512", ErrInput, spec.Name, src.label, src.size)
			}
			if spec.Size == 0 {
				spec.Size = (src.size + layout.Align - 1) / layout.Align * layout.Align
			} else if spec.Size < src.size {
				return nil, fmt.Errorf("%w: partition %q: the layout gives %s, the content is %s", ErrInput, spec.Name, layout.HumanSize(spec.Size), layout.HumanSize(src.size))
			}
			c, st, err := storeContent(ctx, o, "partition "+spec.Name, src)
			if err != nil {
				return nil, err
			}
			m.Partitions = append(m.Partitions, image.Partition{Name: spec.Name, Type: spec.Type, Content: c})
			partSrc = append(partSrc, src)
			digests = append(digests, c.SHA256)
			addStats(&stats, st)
		}
		delete(content, spec.Name)
	}
	for name := range content {
		return nil, fmt.Errorf("%w: --partition %s: the layout has no partition of that name", ErrInput, name)
	}
	if lay, err = m.FitLayout(lay); err != nil {
		return nil, err
	}

	if boot.kernel != "" || boot.initrd != "" || boot.cmdline != "" || o.Agent != "" {
		m.Boot = &image.Boot{Cmdline: boot.cmdline}
		for _, a := range []struct {
			path string
			dst  **image.Content
		}{{boot.kernel, &m.Boot.Kernel}, {boot.initrd, &m.Boot.Initrd}, {o.Agent, &m.Boot.Agent}} {
			if a.path == "" {
				continue
			}
			f, err := os.Open(a.path)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrInput, err)
			}
			st, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, err
			}
			c, s, err := storeContent(ctx, o, filepath.Base(a.path), source{label: a.path, r: f, size: st.Size()})
			f.Close()
			if err != nil {
				return nil, err
			}
			*a.dst = c
			digests = append(digests, c.SHA256)
			addStats(&stats, s)
		}
	}

	loaders, notes, err := bootloader.CollectLoaders(ctx, bootloader.CollectOptions{Files: o.Loaders, Root: o.LoaderRoot, TmpDir: tmp})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	}
	for _, name := range bootloader.LoaderNames() {
		b, ok := loaders[name]
		if !ok {
			continue
		}
		c, s, err := storeContent(ctx, o, "loader "+name, source{label: name, r: bytes.NewReader(b), size: int64(len(b))})
		if err != nil {
			return nil, err
		}
		if m.Loaders == nil {
			m.Loaders = map[string]*image.Content{}
		}
		m.Loaders[name] = c
		digests = append(digests, c.SHA256)
		addStats(&stats, s)
	}

	if onBase != nil {
		ext, err := onBase.extension()
		if err != nil {
			return nil, err
		}
		m.SetExtension(BaseExtension, ext)
	}
	pieceNote, err := setSwarmPieces(ctx, m, pieceSize, o.PieceSize > 0, partSrc)
	if err != nil {
		return nil, err
	}
	if pieceNote != "" {
		notes = append(notes, pieceNote)
	}
	m.Version = o.Version
	if m.Version == "" {
		m.Version = created.Format("20060102.150405") + "-" + image.HashBytes([]byte(strings.Join(digests, "\n")))[:8]
	}
	// Every content above came from image.StoreContent: consistent by
	// construction, so the store need not read it back to check it.
	var made []*image.Content
	for _, nc := range m.Contents() {
		made = append(made, nc.Content)
	}
	id, err := o.Store.PutManifest(m, made...)
	if err != nil {
		return nil, err
	}
	// The layout is stored beside the manifest, outside its id: the same
	// contents built for another disk shape are the same image.
	if err := o.Store.PutLayout(m.Name, m.Version, lay); err != nil {
		return nil, err
	}
	res := &Result{ID: id, Manifest: m, Layout: lay, Stats: stats, Boot: report, Notes: notes}
	if onBase != nil {
		res.Base = &onBase.info
	}
	if o.Signer != nil {
		if err := signManifest(ctx, o.Store, o.Signer, m); err != nil {
			return nil, err
		}
		res.Signed = true
	}
	return res, nil
}

// pieceLength is the swarm piece length a build with --piece-size given
// (0: the default) and chunk size uses; 0 is none (pieces are chunks).
func pieceLength(given, chunkSize int64) (int64, error) {
	switch {
	case given < 0 || given == chunkSize:
		return 0, nil
	case given == 0:
		if chunkSize > image.DefaultPieceLength {
			return image.DefaultPieceLength, nil
		}
		return 0, nil
	case given < image.MinPieceLength || given&(given-1) != 0 || given > chunkSize:
		return 0, fmt.Errorf("%w: --piece-size %d: want a power of two from %s to the chunk size (%s), or 0 for pieces that are chunks",
			ErrInput, given, layout.HumanSize(image.MinPieceLength), layout.HumanSize(chunkSize))
	}
	return given, nil
}

// capPieceLength is the piece length a build uses for n asked (given
// says by --piece-size) and distinct chunks: n raised until the torrent
// has at most image.MaxSwarmPieces pieces (0: pieces are chunks), and,
// when a given size was raised, a note that says so.
func capPieceLength(n int64, given bool, distinct int, chunkSize int64) (int64, string) {
	c := image.ChoosePieceLength(distinct, chunkSize, n)
	if !given || c == n {
		return c, ""
	}
	to := layout.HumanSize(c)
	if c == 0 {
		to = "the chunk size (" + layout.HumanSize(chunkSize) + ": pieces are chunks)"
	}
	return c, fmt.Sprintf("--piece-size %s: %d distinct chunks would make %d swarm pieces, more than %d; raised to %s",
		layout.HumanSize(n), distinct, int64(distinct)*(chunkSize/n), image.MaxSwarmPieces, to)
}

// setSwarmPieces puts the swarm-pieces extension for pieces of n bytes
// (none for 0; given: asked by --piece-size), raised as capPieceLength
// says, in m, hashing the first occurrence of each distinct non-zero
// chunk read again from its partition's source. The note says n was
// raised.
func setSwarmPieces(ctx context.Context, m *image.Manifest, n int64, given bool, partSrc []source) (string, error) {
	if n == 0 {
		return "", nil
	}
	cs, err := m.TorrentChunks()
	if err != nil || len(cs) == 0 {
		return "", err // nothing for a swarm to share
	}
	n, note := capPieceLength(n, given, len(cs), m.ChunkSize)
	if n == 0 {
		return note, nil
	}
	hashes, err := image.PieceHashes(m, n, func(p, c int, buf []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := partSrc[p].r.ReadAt(buf, int64(c)*m.ChunkSize)
		if err == io.EOF {
			err = nil // a short last chunk
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("swarm piece hashes: %w", err)
	}
	return note, m.SetSwarmPieces(&image.SwarmPieces{PieceLength: n, Hashes: hashes})
}

// signManifest signs the manifest bytes the store holds, which are what a client
// fetches and checks, not a re-encoding of m.
func signManifest(ctx context.Context, st *store.Dir, s *image.Signer, m *image.Manifest) error {
	raw, err := st.Manifest(ctx, m.Name, m.Version)
	if err != nil {
		return err
	}
	sig, err := s.Sign(raw)
	if err != nil {
		return fmt.Errorf("sign %s:%s: %w", m.Name, m.Version, err)
	}
	if err := st.PutSignature(m.Name, m.Version, sig); err != nil {
		return fmt.Errorf("sign %s:%s: %w", m.Name, m.Version, err)
	}
	return nil
}

func addStats(a *image.StoreStats, b image.StoreStats) {
	a.Chunks += b.Chunks
	a.Zero += b.Zero
	a.New += b.New
	a.NewBytes += b.NewBytes
}

func storeContent(ctx context.Context, o Options, label string, src source) (*image.Content, image.StoreStats, error) {
	var done int64
	return image.StoreContent(ctx, o.Store, src.r, src.size, o.ChunkSize, func(n int64) {
		done += n
		if o.Progress != nil {
			o.Progress(label, done, src.size)
		}
	})
}

// rootPartition picks the layout entry the root filesystem goes into: one
// named "root", else the only image partition with a root-* type.
func rootPartition(l layout.Layout) (string, error) {
	if p, ok := l.Find("root"); ok && p.Role == layout.RoleImage {
		return p.Name, nil
	}
	var names []string
	for _, p := range l.Partitions {
		if p.Role == layout.RoleImage && strings.HasPrefix(layout.TypeName(p.Type), "root-") {
			names = append(names, p.Name)
		}
	}
	if len(names) != 1 {
		return "", fmt.Errorf("%w: --rootfs needs one image partition named \"root\" (or exactly one of a root-* type) in the layout; found %d", ErrInput, len(names))
	}
	return names[0], nil
}

// addPartition puts a --partition into the default layout before scratch.
func addPartition(l layout.Layout, name string) layout.Layout {
	if _, ok := l.Find(name); ok {
		return l
	}
	spec := layout.Spec{Name: name, Type: layout.TypeLinuxGeneric, Role: layout.RoleImage}
	out := layout.Layout{}
	for _, p := range l.Partitions {
		if p.Rest {
			out.Partitions = append(out.Partitions, spec)
		}
		out.Partitions = append(out.Partitions, p)
	}
	return out
}

// dropEmptyRoot removes the default root entry when only --partition was
// given and none of them is called root.
func dropEmptyRoot(l layout.Layout, content map[string]source) layout.Layout {
	if _, ok := content["root"]; ok {
		return l
	}
	out := layout.Layout{}
	for _, p := range l.Partitions {
		if p.Name == "root" && p.Role == layout.RoleImage {
			continue
		}
		out.Partitions = append(out.Partitions, p)
	}
	return out
}

// fromDisk turns a whole-disk image's GPT into a layout and content.
func fromDisk(di *diskimage.Image, path string) (layout.Layout, map[string]source) {
	var l layout.Layout
	content := map[string]source{}
	used := map[string]bool{}
	hasESP := false
	for _, p := range di.Partitions() {
		name := layout.SanitizeName(p.Name, p.Index)
		for base, k := name, 2; used[name]; k++ {
			name = fmt.Sprintf("%s%d", base, k)
		}
		used[name] = true
		spec := layout.Spec{Name: name, Type: p.Type, Size: p.Size}
		switch p.Type {
		case layout.TypeESP:
			// The ESP belongs to imprint's bootloader step; its old content
			// is not part of the image.
			spec.Role = layout.RoleESP
			spec.Size = max(p.Size, disk.MinESPSize)
			hasESP = true
		case layout.TypeBIOSBoot:
			spec.Role = layout.RoleBIOSBoot
		case layout.TypeSwap:
			spec.Role, spec.FS = layout.RoleLocal, "swap"
		default:
			spec.Role = layout.RoleImage
			content[name] = source{label: fmt.Sprintf("partition %d of %s", p.Index, path), r: p.Reader(di), size: p.Size}
		}
		l.Partitions = append(l.Partitions, spec)
	}
	if !hasESP {
		esp := DefaultLayout().Partitions[0]
		for used[esp.Name] {
			esp.Name += "x"
		}
		l.Partitions = append([]layout.Spec{esp}, l.Partitions...)
	}
	return l, content
}

type bootFiles struct{ kernel, initrd, cmdline string }

// BootReport says which boot artifacts a build took and where from.
type BootReport struct {
	// Kernel and Initrd name the file given, or for a root tree the
	// place in it ("/vmlinuz -> /boot/vmlinuz-6.1.0-28-amd64"); "" none.
	Kernel, Initrd string
	Cmdline        string
	// CmdlineFrom is "--cmdline", "default", or the tree file that
	// carried the command line.
	CmdlineFrom string
}

// bootArtifacts finds the kernel and initrd: given paths win, else
// FindKernel's pick in the root tree (a unified kernel image's sections are
// copied into tmp).
func bootArtifacts(o Options, tmp string) (bootFiles, BootReport, error) {
	b := bootFiles{kernel: o.Kernel, initrd: o.Initrd, cmdline: o.Cmdline}
	r := BootReport{Kernel: o.Kernel, Initrd: o.Initrd, Cmdline: o.Cmdline}
	if o.Cmdline != "" {
		r.CmdlineFrom = "--cmdline"
	}
	if o.NoKernel && (o.Kernel != "" || o.Initrd != "") {
		return b, r, fmt.Errorf("%w: --no-kernel does not combine with --kernel or --initrd", ErrInput)
	}
	if o.Rootfs != "" && b.kernel == "" && !o.NoKernel {
		k, err := FindKernel(o.Rootfs)
		if err != nil {
			if errors.Is(err, ErrNoKernel) {
				return b, r, fmt.Errorf("%w: %w; give --kernel FILE, or --no-kernel for an image without one", ErrInput, err)
			}
			return b, r, fmt.Errorf("%w: --rootfs: %w", ErrInput, err)
		}
		kernel, initrd, err := k.Files(o.Rootfs, tmp)
		if err != nil {
			return b, r, fmt.Errorf("--rootfs: %w", err)
		}
		b.kernel, r.Kernel = kernel, k.Kernel.String()
		if b.initrd == "" && k.Initrd != nil {
			b.initrd, r.Initrd = initrd, k.Initrd.String()
		}
		if b.cmdline == "" && k.Cmdline != "" {
			b.cmdline, r.Cmdline, r.CmdlineFrom = ImageCmdline(k.Cmdline), ImageCmdline(k.Cmdline), k.Kernel.Path+" .cmdline"
		}
	}
	if b.kernel == "" && b.initrd != "" {
		return b, r, fmt.Errorf("%w: an initrd without a kernel", ErrInput)
	}
	if b.kernel != "" && b.cmdline == "" {
		b.cmdline, r.Cmdline, r.CmdlineFrom = "ro", "ro", "default"
	}
	return b, r, nil
}

// buildRootfs makes the reproducible ext4 image of o.Rootfs.
func buildRootfs(ctx context.Context, o Options, tmp string) (source, string, time.Time, error) {
	tr, err := scanTree(ctx, o.Rootfs)
	if err != nil {
		return source{}, "", time.Time{}, err
	}
	digest, newest := tr.digest, tr.newest
	size := o.RootSize
	if size == 0 {
		size = tr.freshSize()
	}
	size = (size + layout.Align - 1) / layout.Align * layout.Align
	out := filepath.Join(tmp, "root.ext4")
	for try := 0; ; try++ {
		err = makeExt4(ctx, o.Rootfs, out, size, digest, newest, tmp)
		if err == nil {
			break
		}
		if o.RootSize != 0 || try == 3 {
			return source{}, "", time.Time{}, err
		}
		size = (size*3/2 + layout.Align - 1) / layout.Align * layout.Align
	}
	f, err := os.Open(out)
	if err != nil {
		return source{}, "", time.Time{}, err
	}
	// The file is removed with tmp; the open handle keeps it readable.
	return source{label: "root filesystem", r: f, size: size}, digest, newest, nil
}
