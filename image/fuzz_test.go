package image

import (
	"bytes"
	"testing"
)

// FuzzParse: no input makes Parse panic, and whatever it accepts is a
// valid manifest that marshals (as format 2) and parses back to the same
// bytes.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"format":1,"name":"a","version":"1","created":"2023-11-14T22:13:20Z","chunk_size":65536,"partitions":[{"name":"esp","type":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B","role":"esp","size":67108864}]}`))
	f.Add([]byte(`{"format":2,"name":"a","version":"1","created":"2023-11-14T22:13:20Z","chunk_size":65536,"partitions":[{"name":"root","type":"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709","content":{"size":512,"sha256":"` + zeros64 + `","chunks":["zero"]}}],"extensions":{"x":{"a":[1,2]}}}`))
	f.Add([]byte(`{"format":2,"requires":["slots"]}`))
	f.Add([]byte(`{"format":2,"name":"a","Name":"b"}`))
	f.Add([]byte(`{"format":2,"loaders":{"ipxe.efi":{"size":1,"sha256":"","chunks":[]}}}`))
	f.Add([]byte(`{"format":1,"partitions":[{"content":{"chunks":["zero"]}}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := Parse(raw)
		if err != nil {
			return
		}
		b, err := m.Marshal()
		if err != nil {
			t.Fatalf("an accepted manifest does not marshal: %v", err)
		}
		m2, err := Parse(b)
		if err != nil {
			t.Fatalf("a re-marshalled manifest does not parse: %v\n%s", err, b)
		}
		b2, _ := m2.Marshal()
		if !bytes.Equal(b, b2) {
			t.Fatal("marshal is not stable")
		}
	})
}

const zeros64 = "0000000000000000000000000000000000000000000000000000000000000000"
