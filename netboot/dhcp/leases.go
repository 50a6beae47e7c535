package dhcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"sort"
	"time"

	"github.com/google/renameio/v2"
)

// leaseFileVersion is written into every lease file; a file with another
// version is refused rather than misread.
const leaseFileVersion = 1

// minWriteInterval spaces lease file writes under load: each write is the
// whole table plus an fsync, so writing after every ACK would cap the
// server at the disk's fsync rate. A crash loses at most this much of the
// newest leases; the clients keep their addresses and renew them.
const minWriteInterval = 100 * time.Millisecond

type leaseFile struct {
	Version int         `json:"version"`
	Leases  []fileLease `json:"leases"`
}

type fileLease struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Expiry   time.Time `json:"expiry"`
	Hostname string    `json:"hostname,omitempty"`
}

// load reads the lease file at New. A missing or empty file is an empty
// table; anything unreadable is ErrCorruptLeaseFile, because guessing
// could hand out an address that a running machine still uses.
func (s *Server) load(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dhcp: reading lease file: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	var lf leaseFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&lf); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorruptLeaseFile, path, err)
	}
	if lf.Version != leaseFileVersion {
		return fmt.Errorf("%w: %s: version %d, want %d", ErrCorruptLeaseFile, path, lf.Version, leaseFileVersion)
	}
	now := s.now()
	for i, fl := range lf.Leases {
		mac, err := net.ParseMAC(fl.MAC)
		if err != nil {
			return fmt.Errorf("%w: %s: lease %d: %w", ErrCorruptLeaseFile, path, i, err)
		}
		ip, err := netip.ParseAddr(fl.IP)
		if err != nil || !ip.Is4() {
			return fmt.Errorf("%w: %s: lease %d: bad IPv4 address %q", ErrCorruptLeaseFile, path, i, fl.IP)
		}
		if _, dup := s.byMAC[string(mac)]; dup {
			return fmt.Errorf("%w: %s: MAC %v appears twice", ErrCorruptLeaseFile, path, mac)
		}
		if _, dup := s.byIP[ip]; dup {
			return fmt.Errorf("%w: %s: address %v appears twice", ErrCorruptLeaseFile, path, ip)
		}
		if !fl.Expiry.After(now) {
			continue
		}
		// The config may have changed since the file was written: a lease
		// that the new config would not give is forgotten, not an error.
		if !s.usableFor(mac, ip, now) {
			s.logf("dhcp: lease file: dropping lease %v -> %v, no longer valid under this config", mac, ip)
			continue
		}
		l := &lease{mac: mac, ip: ip, expiry: fl.Expiry, hostname: fl.Hostname}
		s.byMAC[string(mac)] = l
		s.byIP[ip] = l
	}
	return nil
}

// snapshot copies the live bound leases, sorted by address so that the
// same table always gives the same file. Called with s.mu held; encoding
// happens after the lock is released, so answers are not held up by it.
func (s *Server) snapshot() []fileLease {
	now := s.now()
	live := make([]*lease, 0, len(s.byIP))
	for _, l := range s.byIP {
		if !l.offered && now.Before(l.expiry) {
			live = append(live, l)
		}
	}
	sort.Slice(live, func(i, j int) bool { return live[i].ip.Less(live[j].ip) })
	out := make([]fileLease, len(live))
	for i, l := range live {
		out[i] = fileLease{MAC: l.mac.String(), IP: l.ip.String(), Expiry: l.expiry.UTC(), Hostname: l.hostname}
	}
	return out
}

// encodeLeases writes the lease file: JSON, one lease per line, so that it
// stays readable and diffable by people.
func encodeLeases(leases []fileLease) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "{\"version\": %d, \"leases\": [", leaseFileVersion)
	for i, l := range leases {
		line, err := json.Marshal(l)
		if err != nil {
			return nil, fmt.Errorf("dhcp: encoding leases: %w", err)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n  ")
		b.Write(line)
	}
	b.WriteString("\n]}\n")
	return b.Bytes(), nil
}

// Flush writes the lease table to LeaseFile now, if it changed since the
// last write. Serve flushes in the background and once more when it stops;
// callers of Handle without Serve call Flush themselves.
func (s *Server) Flush() error {
	if s.cfg.LeaseFile == "" {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	leases := s.snapshot()
	s.dirty = false
	s.mu.Unlock()
	data, err := encodeLeases(leases)
	if err == nil {
		// renameio: a temporary file, fsync, rename: a crash leaves the
		// old table or the new one, never half of one.
		err = renameio.WriteFile(s.cfg.LeaseFile, data, 0o644)
		if err != nil {
			err = fmt.Errorf("dhcp: writing lease file: %w", err)
		}
	}
	if err != nil {
		// Try again on the next change or the writer's retry tick; no
		// wake-up here, which would retry a full disk in a tight loop.
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
	}
	return err
}

// writeLeases runs beside Serve's listeners and writes the lease file
// after changes, at most once per minWriteInterval.
func (s *Server) writeLeases(ctx context.Context) {
	retry := time.NewTicker(10 * time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-retry.C:
		}
		if err := s.Flush(); err != nil {
			s.logf("dhcp: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(minWriteInterval):
		}
	}
}
