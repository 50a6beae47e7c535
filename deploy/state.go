package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/imprint-dev/imprint/copier"
	"github.com/imprint-dev/imprint/disk"
	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
)

// Files imprint keeps on a deployed disk's ESP.
const (
	StateDir     = "imprint"
	ManifestFile = StateDir + "/manifest.json"
	StateFile    = StateDir + "/state.json"
	// LayoutFile is the layout the disk was partitioned from: the store's
	// default or the deploy's --layout. It is not part of the image id.
	LayoutFile = StateDir + "/layout.json"
)

// Status of a deploy as recorded on the disk.
const (
	StatusWriting  = "writing"
	StatusComplete = "complete"
)

// State is the journal of a deploy, kept on the ESP. Chunks are marked done
// only after the data was synced, so a resumed deploy can trust the marks.
type State struct {
	Format    int                       `json:"format"`
	ImageID   string                    `json:"image_id"`
	Name      string                    `json:"name"`
	Version   string                    `json:"version"`
	Status    string                    `json:"status"`
	Started   time.Time                 `json:"started"`
	Completed *time.Time                `json:"completed,omitempty"`
	Verified  bool                      `json:"verified"`
	Table     *layout.Table             `json:"table"`
	Done      map[string]*copier.Bitmap `json:"done,omitempty"`
}

// ErrNotDeployed says a disk carries no imprint state.
var ErrNotDeployed = errors.New("not a disk deployed by imprint")

// OnDisk is what a deployed disk says about itself.
type OnDisk struct {
	State       *State
	ManifestRaw []byte
	Manifest    *image.Manifest
	GPT         []layout.GPTPartition
	DiskGUID    string
	ESP         *disk.FAT
	// Layout is the layout the disk was partitioned from; nil on a disk
	// deployed before layouts were recorded.
	Layout *layout.Layout
}

// ReadDisk reads the GPT, the ESP and imprint's state from a target.
func ReadDisk(dev disk.Device) (*OnDisk, error) {
	guid, parts, err := disk.ReadGPT(dev)
	if err != nil {
		return nil, err
	}
	od := &OnDisk{GPT: parts, DiskGUID: guid}
	var esp *layout.GPTPartition
	for i := range parts {
		if parts[i].Type == layout.TypeESP {
			esp = &parts[i]
			break
		}
	}
	if esp == nil {
		return od, fmt.Errorf("%w: no EFI System Partition", ErrNotDeployed)
	}
	fat, err := disk.OpenFAT(dev, esp.Start, esp.Len)
	if err != nil {
		return od, fmt.Errorf("%w: %v", ErrNotDeployed, err)
	}
	od.ESP = fat
	raw, err := fat.ReadFile(StateFile)
	if err != nil {
		return od, fmt.Errorf("%w: no %s on the ESP", ErrNotDeployed, StateFile)
	}
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		return od, fmt.Errorf("%w: %s is damaged: %v", ErrNotDeployed, StateFile, err)
	}
	if st.Format != 1 || st.Table == nil {
		return od, fmt.Errorf("%w: %s has an unknown format", ErrNotDeployed, StateFile)
	}
	od.State = &st
	mraw, err := fat.ReadFile(ManifestFile)
	if err != nil {
		return od, fmt.Errorf("%w: no %s on the ESP", ErrNotDeployed, ManifestFile)
	}
	if image.ID(mraw) != st.ImageID {
		return od, fmt.Errorf("%w: %s has image id %s, the state names %s", ErrNotDeployed, ManifestFile, image.ID(mraw), st.ImageID)
	}
	m, err := image.Parse(mraw)
	if err != nil {
		return od, err
	}
	od.ManifestRaw, od.Manifest = mraw, m
	if fat.Exists(LayoutFile) {
		lraw, err := fat.ReadFile(LayoutFile)
		if err != nil {
			return od, fmt.Errorf("%s: %w", LayoutFile, err)
		}
		l, err := layout.ParseJSON(lraw)
		if err != nil {
			return od, fmt.Errorf("%w: %s is damaged: %w", ErrNotDeployed, LayoutFile, err)
		}
		od.Layout = &l
	}
	return od, nil
}

// tableMatches reports whether the table recorded in the state is what the
// disk's GPT holds now.
func tableMatches(t *layout.Table, parts []layout.GPTPartition) bool {
	if len(parts) != len(t.Partitions) {
		return false
	}
	for i, p := range t.Partitions {
		q := parts[i]
		if q.Start != p.Start || q.Len != p.Len || q.GUID != p.GUID || q.Type != p.Type {
			return false
		}
	}
	return true
}
