package tftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
)

// Sentinel errors a Handler returns (wrapped or not) to pick the TFTP error
// code the client sees. They wrap the io/fs errors, so a Handler may as well
// return fs.ErrNotExist or fs.ErrPermission, and callers may test either.
var (
	// ErrNotFound: the client gets error 1, "file not found".
	ErrNotFound = fmt.Errorf("file not found: %w", fs.ErrNotExist)
	// ErrAccess: the client gets error 2, "access violation".
	ErrAccess = fmt.Errorf("access violation: %w", fs.ErrPermission)
)

// MaxPathLen bounds the file names the built-in handlers accept. PXE file
// names come from a 128-byte DHCP field or a 255-byte option; longer names
// are probes, not boots.
const MaxPathLen = 255

// Handler opens the file a client asked for.
//
// path is the file name exactly as the client sent it; a Handler that serves
// a file system should pass it through CleanPath. The returned reader is
// read from its start; its size (found with Seek) is what the tsize option
// reports. If it implements io.Closer the server closes it when the transfer
// ends. Open is called from concurrent transfers.
type Handler interface {
	Open(ctx context.Context, path string, remote net.Addr) (io.ReadSeeker, error)
}

// HandlerFunc adapts a function to a Handler, for generated content such as
// per-client iPXE scripts.
type HandlerFunc func(ctx context.Context, path string, remote net.Addr) (io.ReadSeeker, error)

// Open calls f.
func (f HandlerFunc) Open(ctx context.Context, path string, remote net.Addr) (io.ReadSeeker, error) {
	return f(ctx, path, remote)
}

// CleanPath turns a client's file name into an io/fs path (no leading slash,
// no "." or ".." elements), the way tftpd-hpa's --secure mode sees it:
//   - a backslash is a slash, for Windows-style PXE clients;
//   - a leading slash is dropped, so "/pxelinux.0" and "pxelinux.0" are the
//     same file and an absolute path can only name something inside the
//     served tree;
//   - any ".." element is refused with ErrAccess, even one that would stay
//     inside the tree, as tftpd-hpa does: no firmware needs it;
//   - NUL bytes and names longer than MaxPathLen are refused with ErrAccess.
//
// Names are not URL-decoded: "%2e%2e" is a literal file name.
func CleanPath(name string) (string, error) {
	if len(name) > MaxPathLen {
		return "", fmt.Errorf("%w: name longer than %d bytes", ErrAccess, MaxPathLen)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL in name", ErrAccess)
	}
	name = strings.ReplaceAll(name, `\`, "/")
	elems := strings.Split(name, "/")
	out := elems[:0]
	for _, e := range elems {
		switch e {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("%w: %q climbs out", ErrAccess, name)
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return "", fmt.Errorf("%w: %q names no file", ErrNotFound, name)
	}
	p := strings.Join(out, "/")
	if !fs.ValidPath(p) {
		return "", fmt.Errorf("%w: invalid name %q", ErrAccess, name)
	}
	return p, nil
}

// DirHandler serves the regular files under root. Names are cleaned with
// CleanPath and opened through os.Root, so neither ".." nor a symlink
// pointing outside root can reach other files (symlinks that stay inside
// root work). Directories, devices and FIFOs are refused.
//
// root is opened per request, so a directory that is replaced while the
// server runs is picked up.
func DirHandler(root string) Handler { return dirHandler(root) }

type dirHandler string

func (d dirHandler) Open(_ context.Context, name string, _ net.Addr) (io.ReadSeeker, error) {
	p, err := CleanPath(name)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(string(d))
	if err != nil {
		return nil, fmt.Errorf("open tftp root: %w", err)
	}
	defer root.Close()
	// O_NONBLOCK so that a FIFO planted in the tree cannot hang the open;
	// it does nothing to reads of a regular file.
	f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, mapOpenError(p, err)
	}
	if err := checkRegular(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return f, nil
}

// mapOpenError gives an os.Root refusal (an escaping symlink or "..") the
// access-violation code, and leaves not-found as it is.
func mapOpenError(p string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", p, ErrNotFound)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes from parent") {
		return fmt.Errorf("%s: %w", p, ErrAccess)
	}
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("%s: %w", p, ErrAccess)
	}
	return fmt.Errorf("open %s: %w", p, err)
}

func checkRegular(f fs.File) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if !st.Mode().IsRegular() {
		if st.IsDir() {
			return fmt.Errorf("%w: is a directory", ErrNotFound)
		}
		return fmt.Errorf("%w: not a regular file", ErrAccess)
	}
	return nil
}

// FSHandler serves the regular files of fsys (embed.FS, os.DirFS,
// fstest.MapFS...). Names are cleaned with CleanPath. A file that cannot
// Seek is read into memory, since tsize and retransmission need its size
// up front; the io/fs implementations in the standard library all Seek.
//
// Prefer DirHandler for a directory on disk: os.DirFS follows symlinks out
// of its root.
func FSHandler(fsys fs.FS) Handler { return fsHandler{fsys} }

type fsHandler struct{ fsys fs.FS }

func (h fsHandler) Open(_ context.Context, name string, _ net.Addr) (io.ReadSeeker, error) {
	p, err := CleanPath(name)
	if err != nil {
		return nil, err
	}
	f, err := h.fsys.Open(p)
	if err != nil {
		return nil, mapOpenError(p, err)
	}
	if err := checkRegular(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if rs, ok := f.(io.ReadSeeker); ok {
		return readSeekCloser{rs, f}, nil
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return bytes.NewReader(b), nil
}

type readSeekCloser struct {
	io.ReadSeeker
	io.Closer
}
