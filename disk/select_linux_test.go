package disk

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestSelectRealLoop selects a loop device of an odd size on this
// machine's own /sys: only with SelectOptions.Loop, never by default.
func TestSelectRealLoop(t *testing.T) {
	const size = 81<<20 + 12345*512 // no other disk here is this size
	_, loop := attachLoop(t, size, nil)
	sel := fmt.Sprintf("size>=%d,size<=%d", size, size)
	got, err := SelectWith("/", sel, SelectOptions{Loop: true})
	if err != nil || got != loop {
		t.Fatalf("SelectWith(%q, loops allowed) = %q, %v; want %s", sel, got, err, loop)
	}
	_, err = Select("/", sel)
	if !errors.Is(err, ErrNoDiskMatch) || !strings.Contains(err.Error(), loop+" ") || !strings.Contains(err.Error(), "not taken: a loop device") {
		t.Fatalf("Select(%q) by default = %v; want ErrNoDiskMatch listing %s as a loop device", sel, err, loop)
	}
}
