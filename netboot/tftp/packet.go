// Package tftp is a read-only TFTP server for firmware that netboots (PXE
// ROMs, OVMF, iPXE, U-Boot).
//
// It speaks RFC 1350 read requests in octet and netascii mode, refuses
// writes, and negotiates the options firmware relies on to go faster than
// 512-byte lock-step: blksize (RFC 2348), tsize and timeout (RFC 2349),
// windowsize (RFC 7440) and tftpd-hpa's rollover. Block numbers wrap past
// 65535 so files larger than 32 MiB work at the default block size.
//
// Files come from a Handler: DirHandler serves a directory and cannot be
// talked out of it; FSHandler serves any fs.FS; HandlerFunc lets a caller
// generate content per client (iPXE scripts, per-MAC configs).
package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Opcode is the first field of every TFTP packet.
type Opcode uint16

// Opcodes from RFC 1350 and RFC 2347.
const (
	OpRRQ   Opcode = 1
	OpWRQ   Opcode = 2
	OpDATA  Opcode = 3
	OpACK   Opcode = 4
	OpERROR Opcode = 5
	OpOACK  Opcode = 6
)

func (o Opcode) String() string {
	switch o {
	case OpRRQ:
		return "RRQ"
	case OpWRQ:
		return "WRQ"
	case OpDATA:
		return "DATA"
	case OpACK:
		return "ACK"
	case OpERROR:
		return "ERROR"
	case OpOACK:
		return "OACK"
	}
	return fmt.Sprintf("opcode(%d)", uint16(o))
}

// ErrorCode is the code carried by an ERROR packet.
type ErrorCode uint16

// Error codes from RFC 1350 and RFC 2347.
const (
	ErrCodeNotDefined       ErrorCode = 0
	ErrCodeFileNotFound     ErrorCode = 1
	ErrCodeAccessViolation  ErrorCode = 2
	ErrCodeDiskFull         ErrorCode = 3
	ErrCodeIllegalOperation ErrorCode = 4
	ErrCodeUnknownTID       ErrorCode = 5
	ErrCodeFileExists       ErrorCode = 6
	ErrCodeNoSuchUser       ErrorCode = 7
	ErrCodeOptionRefused    ErrorCode = 8
)

// Transfer modes. "mail" exists in RFC 1350 but is obsolete and refused.
const (
	ModeOctet    = "octet"
	ModeNetASCII = "netascii"
	ModeMail     = "mail"
)

// MaxRequestSize is the largest request packet ParseRequest accepts. RFC
// 2347 lifted RFC 1350's 512-byte limit without naming a new one; 2048 bytes
// holds any real firmware's file name and options with room to spare, and
// keeps a hostile request from making the parser do much work.
const MaxRequestSize = 2048

// maxOptions bounds how many option pairs a request may carry; real clients
// send at most five or six.
const maxOptions = 32

// ErrMalformed is returned (wrapped) by ParseRequest for packets that are not
// a well-formed RRQ or WRQ.
var ErrMalformed = errors.New("malformed tftp request")

// Request is a parsed RRQ or WRQ.
type Request struct {
	Op       Opcode // OpRRQ or OpWRQ
	Filename string // as sent: no cleaning, that is the Handler's job
	Mode     string // lower case: ModeOctet, ModeNetASCII or ModeMail
	// Options in the order the client sent them, names in lower case
	// (RFC 2347 makes them case-insensitive); only the first of
	// duplicate names is kept.
	Options []Option
}

// Option is one RFC 2347 name/value pair.
type Option struct {
	Name  string
	Value string
}

// Option returns the value of the named option (name in lower case).
func (r Request) Option(name string) (string, bool) {
	for _, o := range r.Options {
		if o.Name == name {
			return o.Value, true
		}
	}
	return "", false
}

// ParseRequest parses an RRQ or WRQ packet.
//
// It is strict where a mistake would change what gets served (opcode, NUL
// terminated file name and mode, a known mode) and lenient where real
// clients are sloppy: trailing NUL padding after the last field is ignored,
// and an unterminated or value-less last option is dropped, as RFC 2347
// lets a server ignore options it cannot use.
func ParseRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > MaxRequestSize {
		return r, fmt.Errorf("%w: %d bytes (max %d)", ErrMalformed, len(b), MaxRequestSize)
	}
	if len(b) < 2 {
		return r, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	r.Op = Opcode(binary.BigEndian.Uint16(b))
	if r.Op != OpRRQ && r.Op != OpWRQ {
		return Request{}, fmt.Errorf("%w: %v is not a request", ErrMalformed, r.Op)
	}
	rest := b[2:]
	name, rest, ok := cutNUL(rest)
	if !ok {
		return Request{}, fmt.Errorf("%w: file name not NUL-terminated", ErrMalformed)
	}
	if name == "" {
		return Request{}, fmt.Errorf("%w: empty file name", ErrMalformed)
	}
	mode, rest, ok := cutNUL(rest)
	if !ok {
		return Request{}, fmt.Errorf("%w: mode not NUL-terminated", ErrMalformed)
	}
	r.Filename = name
	r.Mode = asciiLower(mode)
	switch r.Mode {
	case ModeOctet, ModeNetASCII, ModeMail:
	default:
		return Request{}, fmt.Errorf("%w: unknown mode %q", ErrMalformed, mode)
	}
	for len(rest) > 0 {
		optName, after, ok := cutNUL(rest)
		if !ok {
			break // unterminated last option: ignore it
		}
		if optName == "" {
			// Some PXE ROMs pad the request with NULs. Anything
			// else after an empty name is not a request we understand.
			if bytes.IndexFunc(rest, func(c rune) bool { return c != 0 }) >= 0 {
				return Request{}, fmt.Errorf("%w: empty option name", ErrMalformed)
			}
			break
		}
		value, after, ok := cutNUL(after)
		if !ok {
			break // name without a (terminated) value: ignore it
		}
		rest = after
		if len(r.Options) >= maxOptions {
			return Request{}, fmt.Errorf("%w: more than %d options", ErrMalformed, maxOptions)
		}
		optName = asciiLower(optName)
		if _, dup := r.Option(optName); dup {
			continue
		}
		r.Options = append(r.Options, Option{Name: optName, Value: value})
	}
	return r, nil
}

// AppendBinary appends the request's wire form to b (it implements
// encoding.BinaryAppender). Parsing the result gives r back when r came
// from ParseRequest.
func (r Request) AppendBinary(b []byte) ([]byte, error) {
	if strings.IndexByte(r.Filename, 0) >= 0 || strings.IndexByte(r.Mode, 0) >= 0 {
		return b, fmt.Errorf("%w: NUL in file name or mode", ErrMalformed)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(r.Op))
	b = append(append(b, r.Filename...), 0)
	b = append(append(b, r.Mode...), 0)
	for _, o := range r.Options {
		if strings.IndexByte(o.Name, 0) >= 0 || strings.IndexByte(o.Value, 0) >= 0 {
			return b, fmt.Errorf("%w: NUL in option %q", ErrMalformed, o.Name)
		}
		b = append(append(b, o.Name...), 0)
		b = append(append(b, o.Value...), 0)
	}
	return b, nil
}

// asciiLower folds only A-Z: the RFCs mean ASCII case-insensitivity, and
// Unicode folding could turn a non-ASCII name into a known one.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func cutNUL(b []byte) (field string, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", b, false
	}
	return string(b[:i]), b[i+1:], true
}

// errorPacket builds an ERROR packet. The message is clipped so the packet
// always fits the 512-byte floor every client can receive.
func errorPacket(code ErrorCode, msg string) []byte {
	if len(msg) > 500 {
		msg = msg[:500]
	}
	msg = strings.ReplaceAll(msg, "\x00", "")
	b := make([]byte, 0, 5+len(msg))
	b = binary.BigEndian.AppendUint16(b, uint16(OpERROR))
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	b = append(b, msg...)
	return append(b, 0)
}

// oackPacket builds an OACK carrying the accepted options in order.
func oackPacket(opts []Option) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(OpOACK))
	for _, o := range opts {
		b = append(append(b, o.Name...), 0)
		b = append(append(b, o.Value...), 0)
	}
	return b
}
