package builder

import (
	"strings"
	"testing"

	"github.com/imprint-dev/imprint/image"
	"github.com/imprint-dev/imprint/layout"
)

func TestDefaultLayoutHasStatePartition(t *testing.T) {
	l := DefaultLayout()
	var names []string
	for _, p := range l.Partitions {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, " "); got != "esp root state scratch" {
		t.Fatalf("partitions %q, want esp root state scratch", got)
	}
	if st := l.Partitions[2]; st.Role != layout.RoleLocal || st.FS != "ext4" || st.Size != image.DefaultStateSize {
		t.Fatalf("state: %+v", st)
	}
}
