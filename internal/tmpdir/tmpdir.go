// Package tmpdir makes imprint's temporary directories and removes the ones
// a killed imprint process left behind.
//
// A build or deploy keeps a root filesystem's worth of data in its temporary
// directory; a SIGKILL, an OOM kill or a power cut skips every deferred
// removal. So each directory is named imprint-WHAT-PID-RANDOM, and the next
// build or deploy (Sweep) removes those whose process is gone.
//
// A process id alone is not proof: in another PID namespace sharing /tmp
// (a container) the same number may be dead here while its owner runs. The
// owner therefore also holds a flock on its directory for as long as it
// lives; the kernel drops it when the process dies, however it dies. Sweep
// removes a directory only when both say the owner is gone.
package tmpdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Prefix starts the name of every temporary directory imprint makes.
const Prefix = "imprint-"

// Dir is a temporary directory owned by this process.
type Dir struct {
	// Path is the directory.
	Path string
	lock *os.File // held open (and flocked) until Remove
}

// New makes a directory imprint-WHAT-PID-RANDOM in parent (the system's
// temporary directory when ""). what names the user ("build", "ext4"); it
// must be letters, digits, '.' or '_' so the name parses back.
func New(parent, what string) (*Dir, error) {
	if !validWhat(what) {
		return nil, fmt.Errorf("tmpdir: bad name part %q (letters, digits, '.' or '_')", what)
	}
	if parent == "" {
		parent = os.TempDir()
	}
	p, err := os.MkdirTemp(parent, fmt.Sprintf("%s%s-%d-", Prefix, what, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	d := &Dir{Path: p}
	// A directory that cannot be locked (a filesystem without flock) still
	// works; Sweep then goes by the process id alone.
	if f, err := os.Open(p); err == nil {
		if hold(f) == nil {
			d.lock = f
		} else {
			f.Close()
		}
	}
	return d, nil
}

// Remove deletes the directory and everything in it, then lets go of the
// lock. It is safe to call more than once and on a nil Dir.
func (d *Dir) Remove() error {
	if d == nil || d.Path == "" {
		return nil
	}
	err := os.RemoveAll(d.Path)
	if d.lock != nil {
		d.lock.Close()
		d.lock = nil
	}
	d.Path = ""
	return err
}

func validWhat(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_'
		if !ok {
			return false
		}
	}
	return true
}

// Owner parses a name New made and gives the process id in it; ok is false
// for any other name, including older imprint versions' imprint-WHAT-RANDOM.
func Owner(name string) (pid int, ok bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return 0, false
	}
	parts := strings.SplitN(rest, "-", 3)
	if len(parts) != 3 || !validWhat(parts[0]) || parts[2] == "" {
		return 0, false
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil || pid <= 0 || parts[1] != strconv.Itoa(pid) {
		return 0, false
	}
	return pid, true
}

// Stale is one directory Sweep removed.
type Stale struct {
	Path string
	PID  int
}

// Sweep removes the directories in parent (the system's temporary directory
// when "") that New made in a process that no longer exists: same owner uid
// as this process, the pid not running, and the lock free. It goes on past
// a directory it cannot remove and returns the first such error with what
// it did remove.
func Sweep(parent string) ([]Stale, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil, fmt.Errorf("looking for stale temporary directories in %s: %w", parent, err)
	}
	var removed []Stale
	var first error
	for _, e := range ents {
		pid, ok := Owner(e.Name())
		if !ok || !e.IsDir() || pid == os.Getpid() || alive(pid) {
			continue
		}
		p := filepath.Join(parent, e.Name())
		if !ownedByUs(p) || locked(p) {
			continue
		}
		if err := os.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			if first == nil {
				first = fmt.Errorf("removing stale temporary directory %s: %w", p, err)
			}
			continue
		}
		removed = append(removed, Stale{Path: p, PID: pid})
	}
	return removed, first
}
