// Package layout is the leaf that describes the GPT an image wants:
// partition specs, roles, UAPI type GUIDs, placement on 1 MiB boundaries,
// the layout text formats and sizes. It touches no device.
package layout

import "errors"

// Sentinel errors callers act on.
var (
	ErrBadLayout = errors.New("bad layout")
	ErrTooSmall  = errors.New("target too small")
)

// GPTPartition is one entry of a GPT read from a disk.
type GPTPartition struct {
	Index int
	Name  string
	Type  string
	GUID  string
	Start int64
	Len   int64
	Attrs uint64
}

// FindESP returns the first EFI System Partition of a GPT read from a disk.
// Every caller that looks for a disk's ESP goes through it, so they agree
// on which one it is when a disk has several.
func FindESP(parts []GPTPartition) (GPTPartition, bool) {
	for _, p := range parts {
		if p.Type == TypeESP {
			return p, true
		}
	}
	return GPTPartition{}, false
}
