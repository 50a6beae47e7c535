package ondisk

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/imprint-dev/imprint/bootloader"
	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
)

// ErrDrifted says a deployed disk no longer matches its manifest.
var ErrDrifted = errors.New("disk differs from its image")

// ErrIncomplete says the deploy onto a disk never finished (killed, power
// lost): its partitions are not expected to match yet; rerunning it resumes.
var ErrIncomplete = errors.New("the deploy onto this disk did not finish")

// PartitionReport is the verdict on one image partition.
type PartitionReport struct {
	Name    string  `json:"name"`
	GUID    string  `json:"partuuid"`
	Size    int64   `json:"size"`
	Chunks  int     `json:"chunks"`
	Status  string  `json:"status"` // identical or drifted
	Drifted []Drift `json:"drifted_chunks,omitempty"`
	Problem string  `json:"problem,omitempty"`
}

// Drift locates one chunk that differs.
type Drift struct {
	Index  int    `json:"index"`
	Offset int64  `json:"offset"` // within the partition
	Want   string `json:"want"`
}

// Report is the verdict on a deployed disk (on one root slot of it).
type Report struct {
	Disk string `json:"disk"`
	// Slot is the root slot read ("" on a disk with one), Active whether
	// it is the active one.
	Slot       string            `json:"slot,omitempty"`
	Active     bool              `json:"active"`
	Image      string            `json:"image"`
	ImageID    string            `json:"image_id"`
	Status     string            `json:"deploy_status"`
	Identical  bool              `json:"identical"`
	Partitions []PartitionReport `json:"partitions"`
	// Files are the ESP's files: the image's boot files and loaders
	// (compared byte for byte) and the boot menu's files that change on a
	// running disk (checked for what they may hold).
	Files []FileReport `json:"files,omitempty"`
}

// FileReport is the verdict on one file of the ESP.
type FileReport struct {
	Path string `json:"path"`
	// Of is what the file is: "vmlinuz", "loader systemd-bootx64.efi", or
	// "boot menu" for a file that legitimately changes.
	Of string `json:"of"`
	// Status is identical (byte for byte), valid (a changing file that
	// holds what it may), drifted, or missing.
	Status  string `json:"status"`
	May     string `json:"may,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// VerifyDisk reads a deployed disk back and compares every image partition
// with the manifest recorded on it. The error is ErrDrifted when the disk
// was read fine but differs.
func VerifyDisk(ctx context.Context, path string, progress func(part string, done, total int64)) (*Report, error) {
	return VerifySlot(ctx, path, "", progress)
}

// VerifySlot is VerifyDisk for root slot slot ("" the active one). The
// ESP's loaders and menu belong to the disk, not to a slot: they are
// checked with the active slot only; an inactive slot's own boot files
// (kernel, initrd, agent) are checked with it.
func VerifySlot(ctx context.Context, path, slot string, progress func(part string, done, total int64)) (*Report, error) {
	return VerifySlotWith(ctx, path, slot, VerifyOptions{Progress: progress})
}

// VerifyOptions configure VerifySlotWith.
type VerifyOptions struct {
	// Full also hashes each whole partition read back and compares it with
	// the manifest's content sha256 (copier.VerifyFull): it proves the
	// manifest consistent as well, at the cost of hashing every zero chunk.
	Full     bool
	Progress func(part string, done, total int64)
}

// VerifySlotWith is VerifySlot with options.
func VerifySlotWith(ctx context.Context, path, slot string, o VerifyOptions) (*Report, error) {
	progress := o.Progress
	dev, err := disk.OpenDisk(path, disk.OpenOptions{})
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	od, err := ReadDisk(dev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := od.UseSlot(slot); err != nil {
		if sl := od.SlotNamed(slot); sl != nil && sl.Manifest == nil && sl.State != nil {
			// A sync that had just begun: its manifest is not there yet.
			return &Report{Disk: path, Slot: slot, Image: sl.State.Name + ":" + sl.State.Version, ImageID: sl.State.ImageID, Status: sl.State.Status},
				fmt.Errorf("%s: slot %s: %w (state %q); run the sync again to resume it", path, slot, ErrIncomplete, sl.State.Status)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m := od.Manifest
	rep := &Report{Disk: path, Slot: od.Name, Active: od.Name == od.Active(), Image: m.Name + ":" + m.Version, ImageID: od.State.ImageID, Status: od.State.Status, Identical: od.State.Status == StatusComplete}
	cp := &copier.Copier{ChunkSize: m.ChunkSize}
	for _, p := range m.Partitions {
		if p.Content == nil {
			continue
		}
		pr := PartitionReport{Name: p.Name, Size: p.Content.Size, Chunks: len(p.Content.Chunks), Status: "identical"}
		placed, ok := od.State.Table.Find(od.State.PartitionOf(p.Name))
		if ok {
			pr.GUID = placed.GUID
		}
		var gp *layout.GPTPartition
		for i := range od.GPT {
			if od.GPT[i].GUID == placed.GUID {
				gp = &od.GPT[i]
			}
		}
		if !ok || gp == nil || gp.Start != placed.Start || gp.Len < p.Content.Size {
			pr.Status, pr.Problem = "drifted", "the partition is missing or was moved in the GPT"
			rep.Identical = false
			rep.Partitions = append(rep.Partitions, pr)
			continue
		}
		_ = dev.DropCache(placed.Start, p.Content.Size)
		var mu sync.Mutex
		var done int64
		verify := cp.Verify
		if o.Full {
			verify = cp.VerifyFull
		}
		bad, err := verify(ctx, p.Content, disk.Section{D: dev, Off: placed.Start, Len: placed.Len}, func(n int64) {
			if progress == nil {
				return
			}
			mu.Lock()
			done += n
			d := done
			mu.Unlock()
			progress(p.Name, d, p.Content.Size)
		})
		if err != nil {
			return nil, fmt.Errorf("%s: partition %s: %w", path, p.Name, err)
		}
		for _, i := range bad {
			pr.Drifted = append(pr.Drifted, Drift{Index: i, Offset: int64(i) * m.ChunkSize, Want: p.Content.Chunks[i]})
		}
		if len(bad) > 0 {
			pr.Status = "drifted"
			rep.Identical = false
		}
		rep.Partitions = append(rep.Partitions, pr)
	}
	files, err := verifyESP(od, rep.Active)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, f := range files {
		if f.Status == "drifted" || f.Status == "missing" {
			rep.Identical = false
		}
	}
	rep.Files = files
	if rep.Status != StatusComplete {
		return rep, fmt.Errorf("%s: %w (state %q); run the same deploy again to resume it", path, ErrIncomplete, rep.Status)
	}
	if !rep.Identical {
		return rep, fmt.Errorf("%s: %w", path, ErrDrifted)
	}
	return rep, nil
}

// verifyESP checks the ESP's files of a deployed disk: every boot file and
// loader of the image the disk holds against the manifest, where they were
// installed too (the loader's own place and the fallback copy), and the
// menu's changing files for what they may hold. A disk deployed without a
// boot loader (no menu) is expected to hold none of them.
func verifyESP(od *OnDisk, active bool) ([]FileReport, error) {
	if od.State.Status != StatusComplete {
		return nil, nil // boot files are written last; nothing to say yet
	}
	menu, err := bootloader.ReadMenu(od.ESP)
	if errors.Is(err, bootloader.ErrNoMenu) {
		return nil, nil
	}
	if err != nil {
		return []FileReport{{Path: "/" + bootloader.MenuFile, Of: "boot menu", Status: "drifted", Problem: err.Error()}}, nil
	}
	m := od.Manifest
	var out []FileReport
	exact := func(p, of string, c *image.Content) {
		r := FileReport{Path: p, Of: of, Status: "identical"}
		b, err := od.ESP.ReadFile(p)
		switch {
		case err != nil && !od.ESP.Exists(p):
			r.Status, r.Problem = "missing", "not on the ESP"
		case err != nil:
			r.Status, r.Problem = "drifted", fmt.Sprintf("cannot be read: %v", err)
		case int64(len(b)) != c.Size:
			r.Status, r.Problem = "drifted", fmt.Sprintf("%d bytes, the image's has %d", len(b), c.Size)
		case image.HashBytes(b) != c.SHA256:
			r.Status, r.Problem = "drifted", "sha256 "+image.HashBytes(b)+", the image's is "+c.SHA256
		}
		out = append(out, r)
	}
	for _, f := range imageFiles(m) {
		if active || !strings.HasPrefix(f.label, "loader ") {
			exact("/"+f.path, f.label, f.c)
		}
	}
	if !active {
		return out, nil
	}
	copies := menu.LoaderCopies()
	paths := make([]string, 0, len(copies))
	for p := range copies {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		name := copies[p]
		c := m.Loaders[name]
		if c == nil {
			out = append(out, FileReport{Path: p, Of: "loader " + name, Status: "drifted", Problem: "the menu uses " + name + ", which the image does not carry"})
			continue
		}
		exact(p, "loader "+name+" (installed)", c)
	}
	checks, err := bootloader.CheckMenuFiles(od.ESP)
	if err != nil {
		return nil, err
	}
	for _, c := range checks {
		r := FileReport{Path: c.Path, Of: "boot menu", Status: "valid", May: c.May, Problem: c.Problem}
		if c.Problem != "" {
			r.Status = "drifted"
		}
		out = append(out, r)
	}
	return out, nil
}
