package layout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// ParseJSON reads a layout in its JSON form, the form a store keeps beside
// a manifest (layout.json) and a deployed disk records. Unknown fields are
// refused. Image partitions may have size 0: the content's size, filled in
// when the layout is fitted to an image.
func ParseJSON(data []byte) (Layout, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var l Layout
	if err := dec.Decode(&l); err != nil {
		return Layout{}, fmt.Errorf("%w: JSON: %w", ErrBadLayout, err)
	}
	if dec.More() {
		return Layout{}, fmt.Errorf("%w: JSON: trailing data after the layout", ErrBadLayout)
	}
	for i := range l.Partitions {
		p := &l.Partitions[i]
		if g, err := TypeGUID(p.Type); err == nil {
			p.Type = g
		}
		p.Role = Role(strings.ToLower(string(p.Role)))
	}
	// Validate refuses the size 0 of an "auto" image partition; check a
	// copy with those filled.
	v := Layout{Partitions: append([]Spec(nil), l.Partitions...)}
	for i := range v.Partitions {
		if v.Partitions[i].Role == RoleImage && v.Partitions[i].Size == 0 {
			v.Partitions[i].Size = Align
		}
	}
	if err := v.Validate(); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// MarshalJSON gives the layout's JSON form, indented, with a newline.
func MarshalJSON(l Layout) ([]byte, error) {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func looksLikeJSON(data []byte) bool {
	t := bytes.TrimSpace(data)
	return len(t) > 0 && t[0] == '{'
}
