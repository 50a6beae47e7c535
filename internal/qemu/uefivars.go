package qemu

import (
	"encoding/binary"
	"fmt"
	"os"
	"unicode/utf16"
)

// UEFIVar is one variable in an OVMF NVRAM file.
type UEFIVar struct {
	Name   string
	GUID   string // lower case
	Attrs  uint32
	Data   []byte
	Offset int64 // where its header is in the file
}

// ReadUEFIVars lists the live variables of an OVMF variable store file (an
// authenticated variable store inside a firmware volume), so a test can
// check from the host what the guest or the firmware wrote to NVRAM. Later
// copies of a variable replace earlier ones, as in the firmware.
func ReadUEFIVars(path string) (map[string]UEFIVar, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 0x48+28 || string(b[40:44]) != "_FVH" {
		return nil, fmt.Errorf("%s: not a firmware volume", path)
	}
	hdrLen := int(binary.LittleEndian.Uint16(b[48:]))
	store := b[hdrLen:]
	size := int(binary.LittleEndian.Uint32(store[16:]))
	if size > len(store) || size < 28 {
		return nil, fmt.Errorf("%s: variable store of %d bytes", path, size)
	}
	const (
		authHeader = 60
		varAdded   = 0x3f
	)
	out := map[string]UEFIVar{}
	off := 28
	for off+authHeader <= size {
		h := store[off:]
		if binary.LittleEndian.Uint16(h) != 0x55AA {
			break
		}
		state := h[2]
		attrs := binary.LittleEndian.Uint32(h[4:])
		nameSize := int(binary.LittleEndian.Uint32(h[36:]))
		dataSize := int(binary.LittleEndian.Uint32(h[40:]))
		guid := h[44:60]
		end := authHeader + nameSize + dataSize
		if off+end > size {
			return nil, fmt.Errorf("%s: variable at %d runs past the store", path, off)
		}
		if state == varAdded || state == varAdded&0xfe {
			u := make([]uint16, 0, nameSize/2)
			for i := 0; i+1 < nameSize; i += 2 {
				if c := binary.LittleEndian.Uint16(h[authHeader+i:]); c != 0 {
					u = append(u, c)
				}
			}
			v := UEFIVar{
				Name:   string(utf16.Decode(u)),
				GUID:   fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%x", guid[3], guid[2], guid[1], guid[0], guid[5], guid[4], guid[7], guid[6], guid[8], guid[9], guid[10:16]),
				Attrs:  attrs,
				Data:   append([]byte(nil), h[authHeader+nameSize:end]...),
				Offset: int64(hdrLen + off),
			}
			out[v.Name+"-"+v.GUID] = v
		}
		off += (end + 3) &^ 3
	}
	return out, nil
}
