package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
	"github.com/imprint-dev/imprint/ondisk"
	"golang.org/x/sys/unix"
)

// ModeLocal is imprint.mode=local: the root is this disk's partition.
const ModeLocal = "local"

// VerifyChunks is imprint.verify=chunks: the root partition is served
// through the on-demand root server with the partition as its first
// source, so every chunk is checked against the manifest the first time
// it is read (the on-demand root's checking, not a second one), and a
// drifted chunk is fetched from imprint.source= when there is one. The
// boot does not wait for a read of the whole partition, as with full.
const VerifyChunks = "chunks"

// blockPart is a partition found by reading the GPTs of the machine's
// disks: the initramfs has no udev, so no /dev/disk/by-partuuid.
type blockPart struct {
	Dev  string // /dev/vda2
	Disk string // /dev/vda
	GPT  []layout.GPTPartition
	Part layout.GPTPartition
}

// findPartition looks for the partition whose PARTUUID (or, with byName,
// GPT name on disk onDisk) is want, on every whole disk the kernel lists.
func findPartition(want string, onDisk string, byName bool) (*blockPart, error) {
	ents, err := os.ReadDir("/sys/class/block")
	if err != nil {
		return nil, err
	}
	var disks []string
	for _, e := range ents {
		n := e.Name()
		if _, err := os.Stat(filepath.Join("/sys/class/block", n, "partition")); err == nil {
			continue
		}
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "zram") || strings.HasPrefix(n, "sr") {
			continue
		}
		if onDisk != "" && "/dev/"+n != onDisk {
			continue
		}
		disks = append(disks, n)
	}
	sort.Strings(disks)
	for _, n := range disks {
		d, err := disk.OpenDisk("/dev/"+n, disk.OpenOptions{})
		if err != nil {
			continue
		}
		_, parts, err := disk.ReadGPT(d)
		d.Close()
		if err != nil {
			continue
		}
		for _, p := range parts {
			if (!byName && strings.EqualFold(p.GUID, want)) || (byName && p.Name == want) {
				dev, err := partitionNode(n, p.Index)
				if err != nil {
					return nil, err
				}
				return &blockPart{Dev: dev, Disk: "/dev/" + n, GPT: parts, Part: p}, nil
			}
		}
	}
	return nil, os.ErrNotExist
}

// partitionNode is the device node of partition index of disk name, as the
// kernel names it (vda2, nvme0n1p2): the sysfs child whose "partition"
// file holds the number.
func partitionNode(name string, index int) (string, error) {
	ents, err := os.ReadDir(filepath.Join("/sys/class/block", name))
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/class/block", name, e.Name(), "partition"))
		if err != nil {
			continue
		}
		if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n == index {
			return "/dev/" + e.Name(), nil
		}
	}
	return "", fmt.Errorf("the kernel lists no partition %d of /dev/%s (its table was not read?)", index, name)
}

// waitPartition retries findPartition while disks appear (drivers probe
// asynchronously after their modules load).
func waitPartition(ctx context.Context, want string, limit time.Duration) (*blockPart, error) {
	deadline := time.Now().Add(limit)
	for {
		p, err := findPartition(want, "", false)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return nil, fmt.Errorf("no partition with PARTUUID %s on any disk after %v: %w", want, limit, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// local mounts this disk's root partition read-only, applies the node's
// identity over it and switches to it.
func (a *Agent) local(ctx context.Context) error {
	begin := time.Now()
	guid := strings.ToUpper(strings.TrimPrefix(a.Params.Root, "PARTUUID="))
	root, err := waitPartition(ctx, guid, 20*time.Second)
	if err != nil {
		return err
	}
	a.say("root PARTUUID=%s is %s (partition %q of %s)", strings.ToLower(guid), root.Dev, root.Part.Name, root.Disk)
	m, rp, err := a.verifyLocal(ctx, root)
	if err != nil {
		return err
	}
	// The kernel itself then refuses every write to the root partition:
	// no journal replay, no remount rw, no mistake of ours.
	if err := setReadOnly(root.Dev); err != nil {
		a.say("could not mark %s read-only in the kernel (%v); mounting it read-only", root.Dev, err)
	}
	lower := "/run/imprint/lower"
	from := "local disk " + root.Dev
	if a.Params.Verify == VerifyChunks {
		cfg := serverConfig{Sources: a.chunkSources(), Content: rp.Content, ChunkSize: m.ChunkSize, CacheBytes: DefaultCache, Local: root.Dev}
		if a.Params.CacheBytes > 0 {
			cfg.CacheBytes = a.Params.CacheBytes
		}
		dev, err := a.serveRoot(ctx, cfg, rp.Name, lower)
		if err != nil {
			return err
		}
		from = "local disk " + root.Dev + " checked chunk by chunk (" + dev + ")"
	} else {
		if err := os.MkdirAll(lower, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(root.Dev, lower, "ext4", unix.MS_RDONLY, "noload"); err != nil {
			// noload keeps ext4 from replaying a journal, which would write;
			// a kernel that refuses it still mounts read-only.
			if err := unix.Mount(root.Dev, lower, "ext4", unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("mount %s (ext4, read-only): %w", root.Dev, err)
			}
		}
	}
	state := ""
	switch s := a.Params.State; {
	case s == "none":
	case s != "":
		state = s
	default:
		if p, err := findPartition("state", root.Disk, true); err == nil {
			state = p.Dev
		} else {
			a.say("no partition named state on %s: persistent paths are volatile on this boot", root.Disk)
		}
	}
	return a.assemble(lower, state, from, begin)
}

// verifyLocal checks the root partition as imprint.verify= asks: quick
// compares it with the deploy record on the disk's ESP (the partition is
// the one the image was written to, at its place and size), chunks does
// the same and gives the recorded manifest and root partition for the
// server that checks every chunk as it is read, full reads every chunk
// back against the manifest before the boot. A root that fails is not
// booted.
func (a *Agent) verifyLocal(ctx context.Context, root *blockPart) (*image.Manifest, *image.Partition, error) {
	switch v := a.Params.Verify; v {
	case "", "none":
		return nil, nil, nil
	case "quick", VerifyChunks:
		d, err := disk.OpenDisk(root.Disk, disk.OpenOptions{})
		if err != nil {
			return nil, nil, err
		}
		defer d.Close()
		od, err := ondisk.ReadDisk(d)
		if err != nil {
			return nil, nil, fmt.Errorf("imprint.verify=%s: %s: %w", v, root.Disk, err)
		}
		if od.Manifest == nil || od.State == nil {
			return nil, nil, fmt.Errorf("imprint.verify=%s: %s carries no readable deploy record", v, root.Disk)
		}
		rp, err := od.Manifest.RootPartition()
		if err != nil {
			return nil, nil, err
		}
		placed, ok := od.State.Table.Find(od.State.PartitionOf(rp.Name))
		if !ok || !strings.EqualFold(placed.GUID, root.Part.GUID) || placed.Start != root.Part.Start || root.Part.Len < rp.Content.Size {
			return nil, nil, fmt.Errorf("imprint.verify=%s: %s is not where the deploy record of %s put partition %s", v, root.Dev, root.Disk, rp.Name)
		}
		if v == VerifyChunks {
			// The root server checks every chunk against this manifest:
			// with trusted keys, it must be one they signed.
			if err := a.checkRecordSignature(od.ManifestRaw, od.ESP, od.Slot.SignatureFile()); err != nil {
				return nil, nil, fmt.Errorf("imprint.verify=%s: the deploy record of %s: %w", v, root.Disk, err)
			}
		}
		a.say("verify %s: %s is partition %s of %s:%s as deployed (status %s)", v, root.Dev, rp.Name, od.Manifest.Name, od.Manifest.Version, od.State.Status)
		return od.Manifest, rp, nil
	case "full":
		begin := time.Now()
		rep, err := ondisk.VerifyDisk(ctx, root.Disk, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("imprint.verify=full: %w", err)
		}
		a.say("verify full: %s identical to %s (%v)", root.Disk, rep.Image, time.Since(begin).Round(time.Millisecond))
		return nil, nil, nil
	}
	return nil, nil, fmt.Errorf("imprint.verify=%s: want none, quick, chunks or full", a.Params.Verify)
}

// espFiles is what checkRecordSignature reads of an ESP.
type espFiles interface {
	Exists(name string) bool
	ReadFile(name string) ([]byte, error)
}

// checkRecordSignature verifies a deploy record's manifest (raw) with the
// signature file sigFile on the ESP under the agent's trusted keys; with
// none, anything passes. A missing signature fails as a wrong one does,
// with image.ErrUntrusted.
func (a *Agent) checkRecordSignature(raw []byte, esp espFiles, sigFile string) error {
	t, err := a.trust()
	if err != nil || t == nil {
		return err
	}
	var sig []byte
	if esp.Exists(sigFile) {
		if sig, err = esp.ReadFile(sigFile); err != nil {
			return fmt.Errorf("%s: %w", sigFile, err)
		}
	}
	if err := t.Verify(raw, sig); err != nil {
		return fmt.Errorf("%s: %w", sigFile, err)
	}
	return nil
}

func setReadOnly(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.BLKROSET, 1)
}
