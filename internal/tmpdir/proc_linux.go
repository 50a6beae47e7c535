package tmpdir

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// hold takes a shared lock on the open directory; it lasts as long as the
// open file (and so the process).
func hold(f *os.File) error {
	return unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
}

// locked reports whether a live process holds the directory's lock. An
// error other than "would block" (a filesystem without flock) proves
// nothing either way and counts as free: the pid check has spoken already.
func locked(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return true // cannot look: leave it alone
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return false
	}
	return errors.Is(err, unix.EWOULDBLOCK)
}

// alive reports whether pid names a process in this PID namespace. EPERM
// means it exists under another user.
func alive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// ownedByUs keeps Sweep to directories this user made: never another
// user's, even as root.
func ownedByUs(p string) bool {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false
	}
	return int(st.Uid) == os.Getuid()
}
