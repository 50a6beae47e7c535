package copier

import (
	"sync"

	"github.com/cespare/xxhash/v2"
)

// Written remembers, for each chunk Write checked against its SHA-256 and
// wrote, an xxhash64 of those bytes, so the read-back after it
// (VerifyWritten) compares what the device returns with what was written
// at a fraction of the cost of hashing it with SHA-256 again (the second
// SHA-256 was a fifth of a verified deploy's CPU).
//
// The chain of proof is unchanged: the bytes were proven against the
// signed manifest before they were written, and the read-back proves the
// device holds those bytes. The read-back guards against the device (lost
// or misdirected writes, address aliasing on fake-capacity media, bit
// errors), not against a forger: a device that lies on purpose can return
// the right bytes to any read-back. Against faults, a 64-bit checksum
// misses a corrupted chunk with probability 2^-64.
type Written struct {
	mu   sync.Mutex
	sums map[int]uint64
}

// NewWritten makes an empty record.
func NewWritten() *Written { return &Written{sums: map[int]uint64{}} }

func (w *Written) add(i int, data []byte) {
	if w == nil {
		return
	}
	s := xxhash.Sum64(data)
	w.mu.Lock()
	w.sums[i] = s
	w.mu.Unlock()
}

// matches reports whether chunk i was recorded, and if so whether b is
// what was written.
func (w *Written) matches(i int, b []byte) (recorded, ok bool) {
	if w == nil {
		return false, false
	}
	w.mu.Lock()
	s, recorded := w.sums[i]
	w.mu.Unlock()
	if !recorded {
		return false, false
	}
	return true, xxhash.Sum64(b) == s
}
