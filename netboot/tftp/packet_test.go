package tftp

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want string // fmt of the Request, or "" for ErrMalformed
	}{
		{"rrq octet", "\x00\x01pxelinux.0\x00octet\x00", "{RRQ pxelinux.0 octet []}"},
		{"wrq", "\x00\x02up\x00OCTET\x00", "{WRQ up octet []}"},
		{"netascii mixed case", "\x00\x01a\x00NetAscii\x00", "{RRQ a netascii []}"},
		{"mail", "\x00\x01a\x00mail\x00", "{RRQ a mail []}"},
		{"options", "\x00\x01f\x00octet\x00BLKSIZE\x001468\x00tsize\x000\x00", "{RRQ f octet [{blksize 1468} {tsize 0}]}"},
		{"duplicate option keeps first", "\x00\x01f\x00octet\x00blksize\x00100\x00Blksize\x00200\x00", "{RRQ f octet [{blksize 100}]}"},
		{"NUL padding", "\x00\x01f\x00octet\x00tsize\x000\x00\x00\x00\x00", "{RRQ f octet [{tsize 0}]}"},
		{"unterminated last option", "\x00\x01f\x00octet\x00tsize\x000", "{RRQ f octet []}"},
		{"option without value", "\x00\x01f\x00octet\x00tsize\x00", "{RRQ f octet []}"},
		{"empty option value", "\x00\x01f\x00octet\x00x\x00\x00", "{RRQ f octet [{x }]}"},
		{"empty", "", ""},
		{"one byte", "\x00", ""},
		{"data opcode", "\x00\x03\x00\x01abc", ""},
		{"ack opcode", "\x00\x04\x00\x01", ""},
		{"no filename NUL", "\x00\x01pxelinux.0", ""},
		{"empty filename", "\x00\x01\x00octet\x00", ""},
		{"no mode", "\x00\x01f\x00", ""},
		{"mode not terminated", "\x00\x01f\x00octet", ""},
		{"unknown mode", "\x00\x01f\x00binary\x00", ""},
		{"junk after padding", "\x00\x01f\x00octet\x00\x00junk\x00", ""},
		{"too long", "\x00\x01" + strings.Repeat("a", MaxRequestSize) + "\x00octet\x00", ""},
		{"too many options", "\x00\x01f\x00octet\x00" + manyOptions(maxOptions+1), ""},
		{"max options", "\x00\x01f\x00octet\x00" + manyOptions(2), "{RRQ f octet [{o0 v} {o1 v}]}"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := ParseRequest([]byte(c.in))
			if c.want == "" {
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("got %v, %v; want ErrMalformed", r, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("{%v %s %s %v}", r.Op, r.Filename, r.Mode, r.Options); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
			checkRoundTrip(t, r)
		})
	}
}

// checkRoundTrip: what ParseRequest returns marshals to bytes that parse
// back to the same request.
func checkRoundTrip(t *testing.T, r Request) {
	t.Helper()
	b, err := r.AppendBinary(nil)
	if err != nil {
		t.Fatalf("AppendBinary(%+v): %v", r, err)
	}
	r2, err := ParseRequest(b)
	if err != nil {
		t.Fatalf("reparse %q: %v", b, err)
	}
	if !slices.Equal(r.Options, r2.Options) || r.Op != r2.Op || r.Filename != r2.Filename || r.Mode != r2.Mode {
		t.Fatalf("round trip changed %#v into %#v", r, r2)
	}
}

func TestAppendBinaryRejectsNUL(t *testing.T) {
	for _, r := range []Request{
		{Op: OpRRQ, Filename: "a\x00b", Mode: "octet"},
		{Op: OpRRQ, Filename: "a", Mode: "oc\x00tet"},
		{Op: OpRRQ, Filename: "a", Mode: "octet", Options: []Option{{"x\x00", "1"}}},
		{Op: OpRRQ, Filename: "a", Mode: "octet", Options: []Option{{"x", "\x001"}}},
	} {
		if _, err := r.AppendBinary(nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", r.Filename, err)
		}
	}
}

func TestErrorPacket(t *testing.T) {
	p := errorPacket(ErrCodeFileNotFound, strings.Repeat("x", 1000)+"\x00")
	if len(p) > 512 || p[len(p)-1] != 0 || bytes.Count(p[4:], []byte{0}) != 1 {
		t.Errorf("bad error packet: %d bytes", len(p))
	}
	if OpRRQ.String() != "RRQ" || Opcode(9).String() != "opcode(9)" {
		t.Error("Opcode.String")
	}
}

func manyOptions(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "o%d\x00v\x00", i)
	}
	return b.String()
}
