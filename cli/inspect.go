package cli

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	"github.com/imprint-dev/imprint/store"
	"github.com/spf13/cobra"
)

func newInspect(e *env) *cobra.Command {
	var ref string
	var trust []string
	c := &cobra.Command{
		Use:   "inspect TARGET [--image NAME[:VERSION]]",
		Short: "Show a store (images, versions, sizes, dedup), one image, or a disk (layout, PARTUUIDs, image, state)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := args[0]
			t, err := trustFlag(trust)
			if err != nil {
				return err
			}
			st, err := os.Stat(target)
			if err != nil {
				return err
			}
			if st.IsDir() {
				src, err := store.OpenDir(target)
				if err != nil {
					return err
				}
				if ref != "" {
					name, version, _ := strings.Cut(ref, ":")
					r, err := store.Resolve(cmd.Context(), src, name, version)
					if err != nil {
						return err
					}
					return showImage(e, r, t)
				}
				return showStore(e, cmd, src)
			}
			return showDisk(e, target, t)
		},
	}
	c.Flags().StringVar(&ref, "image", "", "with a store: show this image (NAME or NAME:VERSION)")
	c.Flags().StringArrayVar(&trust, "trust", nil, "minisign public key (file or key text) to verify the image's signature with; repeatable")
	return c
}

func contentBytes(m *image.Manifest) (logical int64, chunks map[string]int64) {
	chunks = map[string]int64{}
	for _, nc := range m.Contents() {
		logical += nc.Content.Size
		for i, h := range nc.Content.Chunks {
			if h != image.ZeroChunk {
				chunks[h] = nc.Content.ChunkLen(i, m.ChunkSize)
			}
		}
	}
	return logical, chunks
}

func showStore(e *env, cmd *cobra.Command, src *store.Dir) error {
	idx, err := src.Index(cmd.Context())
	if err != nil {
		return err
	}
	stored, err := src.StoredChunks()
	if err != nil {
		return err
	}
	type ver struct {
		Name, Version, ID string
		Created           string
		Logical, Unique   int64
	}
	var vers []ver
	var logical int64
	all := map[string]int64{}
	names := make([]string, 0, len(idx.Images))
	for n := range idx.Images {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, v := range idx.Images[n] {
			r, err := store.Resolve(cmd.Context(), src, n, v.Version)
			if err != nil {
				return err
			}
			l, ch := contentBytes(r.Manifest)
			var u int64
			for h, s := range ch {
				u += s
				all[h] = s
			}
			logical += l
			vers = append(vers, ver{n, v.Version, r.ID, v.Created.Format("2006-01-02T15:04:05Z"), l, u})
		}
	}
	var unique int64
	for _, s := range all {
		unique += s
	}
	if e.json {
		e.emitJSON(map[string]any{"store": src.Root, "images": vers, "logical_bytes": logical, "unique_chunk_bytes": unique, "stored_chunks": stored.Count, "stored_bytes": stored.Bytes})
		return nil
	}
	e.printf("store %s\n", src.Root)
	for _, v := range vers {
		e.printf("  %s:%s  %s  id %s  %s of content, %s in non-zero chunks\n", v.Name, v.Version, v.Created, v.ID[:16], layout.HumanSize(v.Logical), layout.HumanSize(v.Unique))
	}
	ratio := 0.0
	if stored.Bytes > 0 {
		ratio = float64(logical) / float64(stored.Bytes)
	}
	e.printf("  %d chunks stored, %s on disk (zstd); %s of image content, %s unique: %.1fx smaller than raw\n",
		stored.Count, layout.HumanSize(stored.Bytes), layout.HumanSize(logical), layout.HumanSize(unique), ratio)
	return nil
}

func showImage(e *env, r *image.Resolved, t *image.Trust) error {
	m := r.Manifest
	sig := t.Examine(r.Raw, r.Signature)
	if e.json {
		e.emitJSON(map[string]any{"id": r.ID, "manifest": m, "signed": sig.Signed && sig.Problem == "", "signature": sig, "layout": r.DefaultLayout()})
		return nil
	}
	e.printf("image %s:%s\n  id %s\n  created %s, chunk size %s\n", m.Name, m.Version, r.ID, m.Created.Format("2006-01-02T15:04:05Z"), layout.HumanSize(m.ChunkSize))
	e.printf("  %s (manifest.json%s)\n", sig, image.SignatureSuffix)
	from := "derived from the contents"
	if r.Layout != nil {
		from = "layout.json"
	} else if _, ok := m.EmbeddedLayout(); ok {
		from = "format 1 manifest"
	}
	e.printf("  default layout (%s):\n", from)
	for _, p := range r.DefaultLayout().Partitions {
		size := layout.HumanSize(p.Size)
		if p.Rest {
			size = "rest (min " + size + ")"
		}
		line := fmt.Sprintf("    %-12s %-9s %-14s %s", p.Name, p.Role, layout.TypeName(p.Type), size)
		if p.FS != "" {
			line += " " + p.FS
		}
		if mp, ok := m.Partition(p.Name); ok && p.Role == layout.RoleImage {
			zero := 0
			for _, h := range mp.Content.Chunks {
				if h == image.ZeroChunk {
					zero++
				}
			}
			line += fmt.Sprintf("  content %s sha256 %s, %d chunks (%d zero)", layout.HumanSize(mp.Content.Size), mp.Content.SHA256[:16], len(mp.Content.Chunks), zero)
		}
		e.printf("%s\n", line)
	}
	if b := m.Boot; b != nil {
		if b.Kernel != nil {
			e.printf("  kernel %s sha256 %s\n", layout.HumanSize(b.Kernel.Size), b.Kernel.SHA256[:16])
		}
		if b.Initrd != nil {
			e.printf("  initrd %s sha256 %s\n", layout.HumanSize(b.Initrd.Size), b.Initrd.SHA256[:16])
		}
		e.printf("  cmdline %q\n", b.Cmdline)
	}
	for _, n := range image.LoaderNames() {
		if c := m.Loaders[n]; c != nil {
			e.printf("  loader %s %s sha256 %s\n", n, layout.HumanSize(c.Size), c.SHA256[:16])
		}
	}
	return nil
}

func showDisk(e *env, path string, t *image.Trust) error {
	dev, err := disk.OpenDisk(path, disk.OpenOptions{})
	if err != nil {
		return err
	}
	defer dev.Close()
	od, err := ondisk.ReadDisk(dev)
	if od == nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if e.json {
		out := map[string]any{"disk": path, "size": dev.Size(), "disk_guid": od.DiskGUID, "partitions": od.GPT}
		if od.State != nil {
			out["state"] = od.State
			out["image_id"] = od.State.ImageID
			if err == nil {
				out["signature"] = diskSignature(od, t)
			}
		}
		if od.Record != nil {
			out["active_slot"] = od.Record.Active
			out["slots"] = slotSummary(od)
		}
		if err != nil {
			out["problem"] = err.Error()
		}
		e.emitJSON(out)
		return nil
	}
	e.printf("disk %s, %s, GUID %s\n", path, layout.HumanSize(dev.Size()), od.DiskGUID)
	for _, p := range od.GPT {
		e.printf("  %d %-12s %-14s start %10s size %10s PARTUUID %s\n", p.Index, p.Name, layout.TypeName(p.Type), layout.HumanSize(p.Start), layout.HumanSize(p.Len), strings.ToLower(p.GUID))
	}
	if err != nil {
		e.printf("  %v\n", err)
		return nil
	}
	s := od.State
	e.printf("  holds image %s:%s, id %s\n  deploy %s (started %s", s.Name, s.Version, s.ImageID, s.Status, s.Started.Format("2006-01-02T15:04:05Z"))
	if s.Completed != nil {
		e.printf(", completed %s", s.Completed.Format("2006-01-02T15:04:05Z"))
	}
	e.printf(")")
	if s.Status == ondisk.StatusComplete {
		if s.Verified {
			e.printf(", verified by read-back")
		}
	} else {
		done, total := 0, 0
		for _, b := range s.Done {
			done += b.Count()
			total += b.Len()
		}
		e.printf(", %d of %d chunks written", done, total)
	}
	e.printf("\n")
	if od.Record != nil {
		for _, sl := range slotSummary(od) {
			e.printf("  slot %s (%s): %s:%s, %s%s\n", sl.Slot, sl.Partition, sl.Name, sl.Version, sl.Status, map[bool]string{true: ", active"}[sl.Active])
		}
	}
	e.printf("  manifest %s (%s on the ESP)\n", diskSignature(od, t), od.Slot.SignatureFile())
	return nil
}

// diskSignature says what the signature a deployed disk carries is worth.
func diskSignature(od *ondisk.OnDisk, t *image.Trust) image.SignatureStatus {
	var sig []byte
	if sf := od.Slot.SignatureFile(); od.ESP != nil && od.ESP.Exists(sf) {
		b, err := od.ESP.ReadFile(sf)
		if err != nil {
			return image.SignatureStatus{Signed: true, Problem: fmt.Sprintf("cannot be read: %v", err)}
		}
		sig = b
	}
	return t.Examine(od.ManifestRaw, sig)
}

type slotLine struct {
	Slot      string `json:"slot"`
	Partition string `json:"partition"`
	Name      string `json:"name,omitempty"`
	Version   string `json:"version,omitempty"`
	ImageID   string `json:"image_id,omitempty"`
	Status    string `json:"status"`
	Active    bool   `json:"active"`
}

// slotSummary lists both root slots, an unwritten one as empty.
func slotSummary(od *ondisk.OnDisk) []slotLine {
	var out []slotLine
	for _, n := range []string{ondisk.SlotA, ondisk.SlotB} {
		l := slotLine{Slot: n, Status: "empty", Active: n == od.Record.Active}
		for _, p := range od.Record.Table.Partitions {
			if p.Role == layout.RoleImage && strings.HasSuffix(p.Name, "-"+n) {
				l.Partition = p.Name
				break
			}
		}
		if st := od.Record.Slots[n]; st != nil {
			l.Name, l.Version, l.ImageID, l.Status = st.Name, st.Version, st.ImageID, st.Status
		}
		out = append(out, l)
	}
	return out
}
