package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockDir holds one small file per disk being written, naming the command
// that holds the disk's lock. It lives under /run rather than beside the
// target: /run is a tmpfs that a reboot empties (as it does the locks), it
// is writable where an image file's directory may not be, and it serves
// block device nodes and image files alike, which "<file>.imprint-lock"
// could not (nothing may be created in /dev, and a file beside an image
// would outlive a crash and be copied along with it).
const LockDir = "/run/imprint/locks"

// lock takes an exclusive advisory lock on f (flock: held as long as the
// open file is, released by the kernel when the process dies) and records
// the holder. flock on the device node is also what systemd-udevd and
// the util-linux tools honour before they touch a block device. It returns
// the record's path, which unlock removes.
func lock(f *os.File, path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("lock %s: %w", path, err)
	}
	record := filepath.Join(LockDir, fmt.Sprintf("%x-%x", st.Dev, st.Ino))
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return "", fmt.Errorf("%w: %s is being written by %s; wait for it to finish or stop it", ErrLocked, path, holder(record))
		}
		return "", fmt.Errorf("lock %s: %w", path, err)
	}
	// The record is a courtesy for the next command's message; the lock
	// holds without it, so a read-only /run costs only the holder's name.
	if err := writeRecord(record, path); err != nil {
		return "", nil
	}
	return record, nil
}

func writeRecord(record, path string) error {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return err
	}
	cmd := strings.Join(os.Args, " ")
	if len(cmd) > 512 {
		cmd = cmd[:512] + "..."
	}
	text := fmt.Sprintf("%d\n%s\n%s\n%s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339), path, cmd)
	tmp := record + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, record)
}

// holder describes who holds a lock from its record. The holder writes the
// record just after taking the lock, so a missing one is retried briefly;
// a record whose process is gone is stale (its writer died before it could
// rewrite it) and is not believed.
func holder(record string) string {
	for try := 0; ; try++ {
		b, err := os.ReadFile(record)
		if err == nil {
			f := strings.SplitN(string(b), "\n", 5)
			if len(f) >= 4 {
				pid, perr := strconv.Atoi(f[0])
				if perr == nil && pidAlive(pid) {
					return fmt.Sprintf("pid %d (%s), since %s", pid, f[3], f[1])
				}
			}
		}
		if try == 4 {
			return "another process (it left no record in " + LockDir + ")"
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// unlock removes the record while the lock is still held, so a record
// never names a process that no longer holds the disk; closing the file
// then releases the lock.
func unlock(record string) {
	if record != "" {
		os.Remove(record)
	}
}
