package ondisk

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/disk"
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

// Report is the verdict on a deployed disk.
type Report struct {
	Disk       string            `json:"disk"`
	Image      string            `json:"image"`
	ImageID    string            `json:"image_id"`
	Status     string            `json:"deploy_status"`
	Identical  bool              `json:"identical"`
	Partitions []PartitionReport `json:"partitions"`
}

// VerifyDisk reads a deployed disk back and compares every image partition
// with the manifest recorded on it. The error is ErrDrifted when the disk
// was read fine but differs.
func VerifyDisk(ctx context.Context, path string, progress func(part string, done, total int64)) (*Report, error) {
	dev, err := disk.OpenDisk(path, disk.OpenOptions{})
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	od, err := ReadDisk(dev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m := od.Manifest
	rep := &Report{Disk: path, Image: m.Name + ":" + m.Version, ImageID: od.State.ImageID, Status: od.State.Status, Identical: od.State.Status == StatusComplete}
	cp := &copier.Copier{ChunkSize: m.ChunkSize}
	for _, p := range m.Partitions {
		if p.Content == nil {
			continue
		}
		pr := PartitionReport{Name: p.Name, Size: p.Content.Size, Chunks: len(p.Content.Chunks), Status: "identical"}
		placed, ok := od.State.Table.Find(p.Name)
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
		bad, err := cp.Verify(ctx, p.Content, disk.Section{D: dev, Off: placed.Start, Len: placed.Len}, func(n int64) {
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
	if rep.Status != StatusComplete {
		return rep, fmt.Errorf("%s: %w (state %q); run the same deploy again to resume it", path, ErrIncomplete, rep.Status)
	}
	if !rep.Identical {
		return rep, fmt.Errorf("%s: %w", path, ErrDrifted)
	}
	return rep, nil
}
