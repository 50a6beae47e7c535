package image

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imprint-dev/imprint/layout"
)

func loaderManifest(loaders map[string]*Content) *Manifest {
	c := &Content{Size: 512, SHA256: strings.Repeat("a", 64), Chunks: []string{strings.Repeat("a", 64)}}
	return &Manifest{
		Format: FormatVersion, Name: "n", Version: "1", Created: time.Unix(0, 0).UTC(), ChunkSize: DefaultChunkSize,
		Partitions: []Partition{{Name: "root", Type: layout.TypeRootX86_64, Content: c}},
		Loaders:    loaders,
	}
}

func TestLoadersAreContentsAndRoundTrip(t *testing.T) {
	sd := &Content{Size: 100, SHA256: strings.Repeat("b", 64), Chunks: []string{strings.Repeat("b", 64)}}
	m := loaderManifest(map[string]*Content{LoaderSystemdBoot: sd})
	raw, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.Loaders[LoaderSystemdBoot] == nil || got.Loaders[LoaderSystemdBoot].SHA256 != sd.SHA256 {
		t.Fatalf("loader lost in the round trip: %+v", got.Loaders)
	}
	var labels []string
	for _, c := range got.Contents() {
		labels = append(labels, c.Label)
	}
	if labels[len(labels)-1] != "loader "+LoaderSystemdBoot {
		t.Errorf("Contents() = %v, want the loader last", labels)
	}
}

func TestLoaderValidation(t *testing.T) {
	ok := func(size int64) *Content {
		n := (size + DefaultChunkSize - 1) / DefaultChunkSize
		c := &Content{Size: size, SHA256: strings.Repeat("c", 64)}
		for range n {
			c.Chunks = append(c.Chunks, strings.Repeat("c", 64))
		}
		return c
	}
	for _, c := range []struct {
		name    string
		loaders map[string]*Content
		want    string
	}{
		{"nil content", map[string]*Content{LoaderIPXEEFI: nil}, "no content"},
		{"bad name", map[string]*Content{"../x.efi": ok(10)}, "loader name"},
		{"too big", map[string]*Content{LoaderGrubEFI: ok(MaxLoaderSize + 1)}, "more than"},
		{"chunk count", map[string]*Content{LoaderGrubEFI: {Size: 10, SHA256: strings.Repeat("c", 64)}}, "loader grubx64.efi"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := loaderManifest(c.loaders).Validate()
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want ErrFormat mentioning %q", err, c.want)
			}
		})
	}
}
