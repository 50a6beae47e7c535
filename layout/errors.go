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
