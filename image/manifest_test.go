package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/layout"
)

const (
	sumA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	sumB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// v1Manifest is a format-1 manifest as imprint 0.x wrote it.
const v1Manifest = `{
  "format": 1,
  "name": "node",
  "version": "v1",
  "created": "2023-11-14T22:13:20Z",
  "chunk_size": 65536,
  "partitions": [
    {"name": "esp", "type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "role": "esp", "size": 536870912},
    {"name": "root", "type": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "role": "image", "size": 2097152,
     "content": {"size": 131072, "sha256": "` + sumA + `", "chunks": ["` + sumA + `", "zero"]}},
    {"name": "scratch", "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "role": "local", "size": 67108864, "rest": true, "optional": true, "fs": "ext4"}
  ],
  "boot": {"kernel": {"size": 10, "sha256": "` + sumB + `", "chunks": ["` + sumB + `"]}, "cmdline": "ro"}
}
`

func testManifest() *Manifest {
	return &Manifest{
		Format: FormatVersion, Name: "node", Version: "v2",
		Created: time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC), ChunkSize: 64 << 10,
		Partitions: []Partition{{Name: "root", Type: layout.TypeRootX86_64,
			Content: &Content{Size: 128 << 10, SHA256: sumA, Chunks: []string{sumA, ZeroChunk}}}},
		Boot:       &Boot{Kernel: &Content{Size: 10, SHA256: sumB, Chunks: []string{sumB}}, Cmdline: "ro"},
		Loaders:    map[string]*Content{LoaderIPXEEFI: {Size: 10, SHA256: sumB, Chunks: []string{sumB}}},
		Extensions: map[string]json.RawMessage{"vendor.example": json.RawMessage(`{"any": [1, "thing"]}`)},
	}
}

func marshal(t *testing.T, m *Manifest) []byte {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFormat1StillParsesIntoTheSameModel(t *testing.T) {
	m, err := Parse([]byte(v1Manifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.Format != FormatV1 || len(m.Partitions) != 1 || m.Partitions[0].Name != "root" || m.Partitions[0].Type != layout.TypeRootX86_64 || m.Partitions[0].Content.Size != 128<<10 {
		t.Fatalf("content partitions: %+v", m.Partitions)
	}
	l, ok := m.EmbeddedLayout()
	if !ok || len(l.Partitions) != 3 || l.Partitions[1].Size != 2<<20 || !l.Partitions[2].Rest {
		t.Fatalf("embedded layout: %v %+v", ok, l)
	}
	if d := m.DefaultLayout(); d.Partitions[1].Size != 2<<20 {
		t.Fatalf("the default layout of a format-1 manifest is not its own: %+v", d)
	}
	if _, err := m.FitLayout(l); err != nil {
		t.Fatalf("a format-1 manifest does not fit its own layout: %v", err)
	}
	// Its id stays the hash of its bytes: nothing re-encodes them.
	r := &Resolved{Manifest: m, Raw: []byte(v1Manifest), ID: ID([]byte(v1Manifest))}
	if r.DefaultLayout().Partitions[0].Size != 512<<20 {
		t.Fatal("a resolved format-1 manifest without layout.json lost its layout")
	}
	// Writers write format 2 only, without the layout.
	b := marshal(t, m)
	if !strings.Contains(string(b), `"format": 2`) || strings.Contains(string(b), `"role"`) {
		t.Fatalf("a format-1 manifest marshals as:\n%s", b)
	}
}

func TestFormat2RoundTrip(t *testing.T) {
	b := marshal(t, testManifest())
	m, err := Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if _, ok := m.EmbeddedLayout(); ok {
		t.Fatal("a format-2 manifest has an embedded layout")
	}
	if b2 := marshal(t, m); string(b2) != string(b) {
		t.Fatalf("round trip changed the bytes:\n%s\n%s", b, b2)
	}
	if got := len(m.Contents()); got != 3 {
		t.Fatalf("%d contents, want root, kernel and a loader", got)
	}
}

// The id covers contents and boot files only: whatever layout a deploy
// uses, the manifest bytes are the same, and a layout field in them is
// refused rather than silently kept out of the layout.
func TestLayoutIsNotPartOfTheID(t *testing.T) {
	m := testManifest()
	id := ID(marshal(t, m))
	for _, l := range []layout.Layout{m.DerivedLayout(), {Partitions: []layout.Spec{
		{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: 256 << 20},
		{Name: "root", Type: layout.TypeRootX86_64, Role: layout.RoleImage, Size: 3 << 30},
		{Name: "scratch", Type: layout.TypeLinuxGeneric, Role: layout.RoleLocal, Size: 1 << 30},
	}}} {
		if _, err := m.FitLayout(l); err != nil {
			t.Fatal(err)
		}
		if ID(marshal(t, m)) != id {
			t.Fatal("fitting a layout changed the image id")
		}
	}
	raw := strings.Replace(string(marshal(t, m)), `"name": "root",`, `"name": "root", "size": 3221225472,`, 1)
	if _, err := Parse([]byte(raw)); err == nil || !strings.Contains(err.Error(), `unknown field "partitions[0].size"`) {
		t.Fatalf("a layout field in a format-2 partition: %v", err)
	}
}

func TestParseRefuses(t *testing.T) {
	good := string(marshal(t, testManifest()))
	edit := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("test bug: %q not in the manifest", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	big := func(f func(m *Manifest)) string {
		m := testManifest()
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name, raw, want string
		is              error
	}{
		{"unknown requires", edit(`"format": 2,`, `"format": 2, "requires": ["slots", "teleport"],`), `needs imprint features ["slots" "teleport"]`, ErrRequires},
		{"requires before unknown fields", edit(`"format": 2,`, `"format": 2, "requires": ["slots"], "slots": {},`), "upgrade imprint", ErrRequires},
		{"requires not a list", edit(`"format": 2,`, `"format": 2, "requires": "slots",`), `"requires" is not a list`, ErrFormat},
		{"future format", edit(`"format": 2,`, `"format": 3,`), "format version 3 is not supported", ErrFormat},
		{"duplicate key", edit(`"name": "node",`, `"name": "node", "name": "evil",`), `key "name" given twice`, ErrFormat},
		{"duplicate nested key", edit(`"cmdline": "ro"`, `"cmdline": "ro", "cmdline": "rw"`), `key "boot.cmdline" given twice`, ErrFormat},
		{"case variant key", edit(`"name": "node",`, `"name": "node", "Name": "evil",`), `keys "name" and "Name" differ only in case`, ErrFormat},
		{"case variant alone", edit(`"version": "v2",`, `"VERSION": "v2",`), `unknown field "VERSION" (the field is spelt "version")`, ErrFormat},
		{"kelvin sign", edit(`"chunk_size"`, "\"chun\u212a_size\""), `spelt "chunk_size"`, ErrFormat},
		{"case variant loaders", edit(`"ipxe.efi": {`, `"IPXE.efi": {"size": 0, "sha256": "`+sumA+`", "chunks": []}, "ipxe.efi": {`), `differ only in case`, ErrFormat},
		{"duplicate inside an extension", edit(`"any": [`, `"any": 1, "any": [`), `key "extensions.vendor.example.any" given twice`, ErrFormat},
		{"unknown field", edit(`"format": 2,`, `"format": 2, "layout": {},`), `unknown field "layout"`, ErrFormat},
		{"unknown loader", edit(`"ipxe.efi"`, `"pxelinux.0"`), `loader name "pxelinux.0" is not one this imprint knows`, ErrFormat},
		{"partition without content", edit(`"content": {`, `"content": null, "x": {`), "unknown field", ErrFormat},
		{"lower-case type", edit(`"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"`, `"4f68bce3-e8cd-4db1-96e7-fbcaf984b709"`), "not an upper-case GUID", ErrFormat},
		{"type by name", edit(`"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"`, `"root-x86-64"`), "not an upper-case GUID", ErrFormat},
		{"trailing data", good + "{}", "after top-level value", ErrFormat},
		{"format 1: content larger than its partition", strings.Replace(v1Manifest, `"size": 2097152`, `"size": 65536`, 1), "larger than the partition", ErrFormat},
		{"format 1: unknown role", strings.Replace(v1Manifest, `"role": "esp"`, `"role": "boot"`, 1), "unknown role", ErrFormat},
		{"format 1: duplicate key", strings.Replace(v1Manifest, `"role": "esp"`, `"role": "esp", "role": "image"`, 1), "given twice", ErrFormat},
		{"format 1: requires", strings.Replace(v1Manifest, `"format": 1,`, `"format": 1, "requires": [],`, 1), `unknown field "requires"`, ErrFormat},
		{"boot file over the cap", big(func(m *Manifest) { m.Boot.Kernel.Size = MaxBootFile + 1 }), "kernel: size 1073741825 is more than the limit", ErrFormat},
		{"loader over the cap", big(func(m *Manifest) { m.Loaders[LoaderIPXEEFI].Size = MaxLoaderSize + 512 }), `loader ipxe.efi: size 67109376 is more than the limit`, ErrFormat},
		{"partition over the cap", big(func(m *Manifest) { m.Partitions[0].Content.Size = MaxPartition + 512 }), "more than the limit of 1125899906842624", ErrFormat},
		{"size that would overflow", big(func(m *Manifest) { m.Partitions[0].Content.Size = math.MaxInt64 - 511 }), "more than the limit", ErrFormat},
		{"negative size", big(func(m *Manifest) { m.Boot.Kernel.Size = -1 }), "negative size", ErrFormat},
		{"too many partitions", big(func(m *Manifest) {
			for i := range 128 {
				m.Partitions = append(m.Partitions, Partition{Name: fmt.Sprint("p", i), Type: layout.TypeLinuxGeneric, Content: m.Partitions[0].Content})
			}
		}), "129 partitions", ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.raw))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.is) {
				t.Fatalf("got %v, want an error (%v) containing %q", err, tc.is, tc.want)
			}
		})
	}
}

func TestExtensionsAreKeptNotInterpreted(t *testing.T) {
	raw := strings.Replace(string(marshal(t, testManifest())), `"vendor.example": {`, `"future": {"whatever": [null, {"deep": true}]}, "vendor.example": {`, 1)
	m, err := Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Extensions["future"]) == "" {
		t.Fatal("an extension was dropped")
	}
}

func TestFitLayout(t *testing.T) {
	m := testManifest()
	esp := layout.Spec{Name: "esp", Type: layout.TypeESP, Role: layout.RoleESP, Size: 512 << 20}
	root := layout.Spec{Name: "root", Type: layout.TypeRootX86_64, Role: layout.RoleImage}
	with := func(s ...layout.Spec) layout.Layout { return layout.Layout{Partitions: s} }
	l, err := m.FitLayout(with(esp, root))
	if err != nil || l.Partitions[1].Size != 1<<20 {
		t.Fatalf("auto size: %v %+v", err, l)
	}
	small, wrongType, extra := root, root, root
	small.Size = 64 << 10
	wrongType.Type = layout.TypeLinuxGeneric
	extra.Name = "usr"
	localRoot := root
	localRoot.Role, localRoot.Size = layout.RoleLocal, 1<<20
	for _, tc := range []struct {
		name string
		l    layout.Layout
		want string
	}{
		{"too small", with(esp, small), `image partition "root": the layout gives 64.0 KiB, the content is 128.0 KiB`},
		{"wrong type", with(esp, wrongType), `image partition "root" has type linux-generic in the layout`},
		{"image partition without content", with(esp, root, extra), `image partition "usr": image node:v2 has no content of that name`},
		{"content partition missing", with(esp), `no partition "root"`},
		{"content partition not image", with(esp, localRoot), `partition "root" is local in the layout`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.FitLayout(tc.l)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, layout.ErrBadLayout) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestDerivedLayout(t *testing.T) {
	l := testManifest().DerivedLayout()
	if len(l.Partitions) != 4 || l.Partitions[0].Role != layout.RoleESP || l.Partitions[0].Size != 512<<20 ||
		l.Partitions[1].Name != "root" || l.Partitions[1].Size != 1<<20 || !l.Partitions[3].Rest || !l.Partitions[3].Optional {
		t.Fatalf("%+v", l)
	}
	// Node identity keeps persistent paths on a state partition: the
	// default deploy must make one, fixed-size and ext4.
	if st := l.Partitions[2]; st.Name != "state" || st.Role != layout.RoleLocal || st.FS != "ext4" || st.Size != 256<<20 || st.Rest {
		t.Fatalf("state partition: %+v", st)
	}
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
}
