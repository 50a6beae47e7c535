package dhcp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	defaultLeaseTime = time.Hour
	// offerHold keeps an offered address for its client long enough for
	// a slow firmware to send its REQUEST, so two clients that DISCOVER
	// at once are not offered the same address.
	offerHold = time.Minute
	// declineHold keeps an address that a client found in use (DECLINE)
	// out of the pool for a while; whatever squats on it may go away.
	declineHold = 10 * time.Minute
)

// lease is one client's address: bound (ACKed) or only offered. Leases
// are keyed by the hardware address, not by the client identifier (option
// 61): a netbooting machine is several DHCP clients in a row (PXE ROM,
// iPXE, the booted OS), each free to send its own identifier or none, and
// it should keep one address through all of them.
type lease struct {
	mac      net.HardwareAddr
	ip       netip.Addr
	expiry   time.Time
	hostname string
	// offered: an OFFER's hold, not yet ACKed. Holds are not persisted.
	offered bool
}

// Server is a DHCP or proxyDHCP server. Its methods are safe for
// concurrent use.
type Server struct {
	cfg      Config
	mode     Mode
	serverIP netip.Addr
	logf     func(string, ...any)
	// now is the clock; tests replace it to make leases expire.
	now func() time.Time

	// Full mode, fixed after New.
	subnet     netip.Prefix
	poolStart  uint32
	poolEnd    uint32
	leaseTime  time.Duration
	resByMAC   map[string]netip.Addr
	resByIP    map[netip.Addr]Reservation
	staticOpts staticOptions

	mu       sync.Mutex
	byMAC    map[string]*lease // key: string(MAC bytes)
	byIP     map[netip.Addr]*lease
	declined map[netip.Addr]time.Time
	next     uint32 // where the next free-address search starts
	dirty    bool   // leases changed since the last write of LeaseFile
	serving  bool

	// wake tells the lease writer that leases changed (capacity 1: any
	// number of changes before the writer runs make one write).
	wake chan struct{}
	// writeMu serialises writes of LeaseFile (Flush vs. the writer).
	writeMu sync.Mutex
}

// staticOptions are the per-subnet option values, encoded once.
type staticOptions struct {
	netmask net.IPMask
	router  net.IP
	dns     []net.IP
}

// New checks cfg and, in Full mode, loads the lease file. It opens no
// sockets: Serve does.
func New(cfg Config) (*Server, error) { return build(cfg, time.Now) }

// build is New with a clock, so that tests can load lease files and
// expire leases without waiting.
func build(cfg Config, now func() time.Time) (*Server, error) {
	s := &Server{
		cfg:      cfg,
		mode:     cfg.Mode,
		logf:     cfg.Logf,
		now:      now,
		byMAC:    map[string]*lease{},
		byIP:     map[netip.Addr]*lease{},
		declined: map[netip.Addr]time.Time{},
		resByMAC: map[string]netip.Addr{},
		resByIP:  map[netip.Addr]Reservation{},
		wake:     make(chan struct{}, 1),
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	sip, ok := addr4(cfg.ServerIP)
	if !ok {
		return nil, fmt.Errorf("%w: ServerIP %v is not an IPv4 address", ErrConfig, cfg.ServerIP)
	}
	s.serverIP = sip
	switch cfg.Mode {
	case Proxy:
		if cfg.Booter == nil {
			return nil, fmt.Errorf("%w: proxy mode needs a Booter", ErrConfig)
		}
		return s, nil
	case Full:
	default:
		return nil, fmt.Errorf("%w: unknown mode %d", ErrConfig, int(cfg.Mode))
	}
	if err := s.initPool(cfg); err != nil {
		return nil, err
	}
	if cfg.LeaseFile != "" {
		if err := s.load(cfg.LeaseFile); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Server) initPool(cfg Config) error {
	ones, bits := cfg.Netmask.Size()
	if bits != 32 {
		return fmt.Errorf("%w: Netmask %v is not a contiguous IPv4 mask", ErrConfig, cfg.Netmask)
	}
	s.subnet = netip.PrefixFrom(s.serverIP, ones).Masked()
	start, ok1 := addr4(cfg.PoolStart)
	end, ok2 := addr4(cfg.PoolEnd)
	if !ok1 || !ok2 {
		return fmt.Errorf("%w: pool %v-%v is not IPv4", ErrConfig, cfg.PoolStart, cfg.PoolEnd)
	}
	if !s.subnet.Contains(start) || !s.subnet.Contains(end) {
		return fmt.Errorf("%w: pool %v-%v is not inside %v", ErrConfig, start, end, s.subnet)
	}
	s.poolStart, s.poolEnd = u32(start), u32(end)
	if s.poolStart > s.poolEnd {
		return fmt.Errorf("%w: pool start %v is after its end %v", ErrConfig, start, end)
	}
	s.next = s.poolStart
	s.leaseTime = cfg.LeaseTime
	if s.leaseTime <= 0 {
		s.leaseTime = defaultLeaseTime
	}
	if s.leaseTime/time.Second > 0xfffffffe {
		return fmt.Errorf("%w: LeaseTime %v does not fit option 51", ErrConfig, cfg.LeaseTime)
	}
	s.staticOpts.netmask = cfg.Netmask
	if cfg.Router != nil {
		r, ok := addr4(cfg.Router)
		if !ok {
			return fmt.Errorf("%w: Router %v is not IPv4", ErrConfig, cfg.Router)
		}
		s.staticOpts.router = net.IP(r.AsSlice())
	}
	for _, d := range cfg.DNS {
		a, ok := addr4(d)
		if !ok {
			return fmt.Errorf("%w: DNS server %v is not IPv4", ErrConfig, d)
		}
		s.staticOpts.dns = append(s.staticOpts.dns, net.IP(a.AsSlice()))
	}
	for _, r := range cfg.Reservations {
		ip, ok := addr4(r.IP)
		if !ok || !s.subnet.Contains(ip) {
			return fmt.Errorf("%w: reservation %v -> %v is not an address in %v", ErrConfig, r.MAC, r.IP, s.subnet)
		}
		if len(r.MAC) == 0 {
			return fmt.Errorf("%w: reservation for %v has no MAC", ErrConfig, ip)
		}
		if ip == s.serverIP {
			return fmt.Errorf("%w: reservation %v -> %v is the server's own address", ErrConfig, r.MAC, ip)
		}
		if _, dup := s.resByMAC[string(r.MAC)]; dup {
			return fmt.Errorf("%w: MAC %v is reserved twice", ErrConfig, r.MAC)
		}
		if _, dup := s.resByIP[ip]; dup {
			return fmt.Errorf("%w: address %v is reserved twice", ErrConfig, ip)
		}
		s.resByMAC[string(r.MAC)] = ip
		s.resByIP[ip] = r
	}
	return nil
}

// addr4 converts a net.IP to an IPv4 netip.Addr.
func addr4(ip net.IP) (netip.Addr, bool) {
	v4 := ip.To4()
	if v4 == nil {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(v4)), true
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func fromU32(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func ipOf(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

// inPool reports whether ip may be handed out dynamically.
func (s *Server) inPool(ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	v := u32(ip)
	return v >= s.poolStart && v <= s.poolEnd && ip != s.serverIP
}

// markDirty records that LeaseFile is stale and wakes the writer. Called
// with s.mu held.
func (s *Server) markDirty() {
	if s.cfg.LeaseFile == "" {
		return
	}
	s.dirty = true
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// --- lease bookkeeping; all with s.mu held ---

// usableFor reports whether mac may have ip now: a reserved address only
// for its owner; a pool address that is not declined and not held by
// another client's live lease or offer.
func (s *Server) usableFor(mac net.HardwareAddr, ip netip.Addr, now time.Time) bool {
	if res, ok := s.resByMAC[string(mac)]; ok {
		return ip == res
	}
	if _, reserved := s.resByIP[ip]; reserved || !s.inPool(ip) {
		return false
	}
	if until, ok := s.declined[ip]; ok {
		if now.Before(until) {
			return false
		}
		delete(s.declined, ip)
	}
	if l := s.byIP[ip]; l != nil && string(l.mac) != string(mac) && now.Before(l.expiry) {
		return false
	}
	return true
}

// assign records ip for mac (a hold if offered, else a bound lease),
// dropping any record that stands in the way: mac's old address, or an
// expired lease of another client on ip.
func (s *Server) assign(mac net.HardwareAddr, ip netip.Addr, expiry time.Time, offered bool) *lease {
	if old := s.byMAC[string(mac)]; old != nil && old.ip != ip {
		s.drop(old)
	}
	if other := s.byIP[ip]; other != nil && string(other.mac) != string(mac) {
		s.drop(other)
	}
	l := s.byMAC[string(mac)]
	if l == nil {
		l = &lease{mac: append(net.HardwareAddr(nil), mac...), ip: ip}
		s.byMAC[string(mac)] = l
		s.byIP[ip] = l
	}
	wasBound := !l.offered && l.expiry.After(s.now())
	l.expiry, l.offered = expiry, offered
	if r, ok := s.resByIP[ip]; ok {
		l.hostname = r.Hostname
	}
	if !offered || wasBound {
		s.markDirty()
	}
	return l
}

func (s *Server) drop(l *lease) {
	delete(s.byMAC, string(l.mac))
	if s.byIP[l.ip] == l {
		delete(s.byIP, l.ip)
	}
	if !l.offered {
		s.markDirty()
	}
}

// allocate finds a free pool address for mac, searching round-robin from
// where the last search ended so that freed addresses are not reused at
// once (a client that just left may come back).
func (s *Server) allocate(mac net.HardwareAddr, now time.Time) (netip.Addr, bool) {
	size := uint64(s.poolEnd-s.poolStart) + 1
	v := s.next
	for i := uint64(0); i < size; i++ {
		ip := fromU32(v)
		if v == s.poolEnd {
			v = s.poolStart
		} else {
			v++
		}
		if s.usableFor(mac, ip, now) {
			s.next = v
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// Lookup says which machine has ip: the MAC and host name of its bound,
// unexpired lease, else of the reservation of ip (a machine that keeps
// its address past a server restart without a lease file). ok is false
// when the server knows neither (proxy mode knows nothing).
func (s *Server) Lookup(ip netip.Addr) (mac net.HardwareAddr, hostname string, ok bool) {
	ip = ip.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.byIP[ip]; l != nil && !l.offered && s.now().Before(l.expiry) {
		return append(net.HardwareAddr(nil), l.mac...), l.hostname, true
	}
	if r, ok := s.resByIP[ip]; ok {
		return append(net.HardwareAddr(nil), r.MAC...), r.Hostname, true
	}
	return nil, "", false
}
