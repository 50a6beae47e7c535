package tftp

import (
	"bufio"
	"io"
)

// netasciiReader converts a Unix text file to netascii (RFC 764, as RFC
// 1350 asks): LF becomes CR LF and a bare CR becomes CR NUL. It is a stream
// because the converted size is not known up front.
type netasciiReader struct {
	r       *bufio.Reader
	pending int // byte owed from the previous expansion, or -1
}

func newNetASCIIReader(r io.Reader) *netasciiReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	return &netasciiReader{r: br, pending: -1}
}

func (n *netasciiReader) Read(p []byte) (int, error) {
	i := 0
	for i < len(p) {
		if n.pending >= 0 {
			p[i] = byte(n.pending)
			n.pending = -1
			i++
			continue
		}
		c, err := n.r.ReadByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				return i, nil
			}
			return i, err
		}
		switch c {
		case '\n':
			p[i], n.pending = '\r', '\n'
		case '\r':
			p[i], n.pending = '\r', 0
		default:
			p[i] = c
		}
		i++
	}
	return i, nil
}
