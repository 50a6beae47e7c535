// Package dhcp is imprint's DHCP server for netbooting: a full DHCP server
// with a lease pool, reservations and a persisted lease file, or a proxyDHCP
// server that runs beside a site's own DHCP server and only adds boot
// options for PXE and UEFI HTTP boot clients.
//
// It is built on github.com/insomniacslk/dhcp's dhcpv4 message code; the
// sockets are its own so that it can bind to one interface without
// SO_REUSEPORT (which would silently split unicast traffic with another
// server on the same port) and so that Serve can stop on a context.
//
// Relay agents (giaddr) are not supported: such requests are logged and
// dropped. The server is meant to sit on the netboot segment itself.
package dhcp

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Arch is the client system architecture from DHCP option 93 (RFC 4578,
// IANA "Processor Architecture Types"). The value is kept as sent, so a
// Booter can tell apart values this package has no name for.
type Arch int

// Architectures a netboot server meets in practice. UEFI x64 firmware sends
// 7; 9 is the same machine in RFC 4578's original (erroneous) numbering and
// some firmware still sends it.
const (
	ArchUnknown       Arch = -1 // the client sent no option 93
	ArchBIOS          Arch = 0  // x86 BIOS (legacy PXE ROM)
	ArchUEFIIA32      Arch = 6
	ArchUEFIx64       Arch = 7
	ArchUEFIx64Alt    Arch = 9
	ArchUEFIARM64     Arch = 11
	ArchUEFIIA32HTTP  Arch = 15
	ArchUEFIx64HTTP   Arch = 16
	ArchUEFIARM64HTTP Arch = 19
)

// UEFIx64 reports whether the client is x86-64 UEFI firmware (PXE or HTTP).
func (a Arch) UEFIx64() bool {
	return a == ArchUEFIx64 || a == ArchUEFIx64Alt || a == ArchUEFIx64HTTP
}

func (a Arch) String() string {
	switch a {
	case ArchUnknown:
		return "unknown"
	case ArchBIOS:
		return "bios"
	case ArchUEFIIA32:
		return "uefi-ia32"
	case ArchUEFIx64, ArchUEFIx64Alt:
		return "uefi-x64"
	case ArchUEFIARM64:
		return "uefi-arm64"
	case ArchUEFIIA32HTTP:
		return "uefi-ia32-http"
	case ArchUEFIx64HTTP:
		return "uefi-x64-http"
	case ArchUEFIARM64HTTP:
		return "uefi-arm64-http"
	}
	return fmt.Sprintf("arch-%d", int(a))
}

// Client is what a request says about the machine that sent it.
type Client struct {
	MAC        net.HardwareAddr
	Arch       Arch
	IPXE       bool // user class (option 77) "iPXE": already running iPXE
	HTTPClient bool // vendor class (option 60) starts with "HTTPClient": UEFI HTTP boot
	PXE        bool // vendor class (option 60) starts with "PXEClient"
}

// Netboot reports whether the client asks to boot from the network at all.
func (c Client) Netboot() bool { return c.PXE || c.HTTPClient || c.IPXE }

// Boot is what one machine boots.
type Boot struct {
	// NextServer is the TFTP server (siaddr, option 66). Nil means the
	// DHCP server's own address.
	NextServer net.IP
	// Filename is a TFTP path for PXE ROMs, or a full http:// URL for
	// iPXE and UEFI HTTP boot clients.
	Filename string
}

// Booter decides per machine what it boots; ok=false means "do not offer
// boot options to this client" (in proxy mode: do not answer it at all).
// It is called without the server's lock held, possibly concurrently.
type Booter func(c Client) (b Boot, ok bool)

// Mode selects between a full DHCP server and a proxyDHCP server.
type Mode int

const (
	// Full hands out addresses from a pool and boot options with them.
	Full Mode = iota
	// Proxy runs beside a DHCP server we cannot touch: it hands out no
	// addresses, only boot options to PXE and HTTP boot clients (port 67
	// proxy offers, port 4011 boot server ACKs).
	Proxy
)

func (m Mode) String() string {
	switch m {
	case Full:
		return "full"
	case Proxy:
		return "proxy"
	}
	return fmt.Sprintf("mode-%d", int(m))
}

// Reservation pins one MAC address to one IP address.
type Reservation struct {
	MAC      net.HardwareAddr
	IP       net.IP
	Hostname string
}

// Config configures a Server.
type Config struct {
	Mode Mode
	// Interface is the interface to bind to (SO_BINDTODEVICE). Empty
	// binds to all interfaces, which is only sensible in tests.
	Interface string
	// ServerIP is our address on that interface: siaddr and option 54.
	ServerIP net.IP

	// Full mode only.
	PoolStart, PoolEnd net.IP
	Netmask            net.IPMask
	Router             net.IP
	DNS                []net.IP
	LeaseTime          time.Duration // default 1 h
	Reservations       []Reservation
	// LeaseFile keeps leases across restarts. Empty keeps them in memory.
	LeaseFile string

	// Booter decides what each netboot client boots. Nil offers boot
	// options to nobody (a plain DHCP server); Proxy mode requires it.
	Booter Booter
	// Logf receives one line per notable event (leases, drops, errors).
	// Nil discards them.
	Logf func(string, ...any)
}

// Errors callers act on.
var (
	// ErrPoolExhausted: no address left for a new client.
	ErrPoolExhausted = errors.New("dhcp: address pool exhausted")
	// ErrCorruptLeaseFile: the lease file cannot be read back; the
	// server refuses to start rather than hand out addresses that may be
	// in use.
	ErrCorruptLeaseFile = errors.New("dhcp: corrupt lease file")
	// ErrMalformed: a request that no DHCP client should send.
	ErrMalformed = errors.New("dhcp: malformed request")
	// ErrRelayed: the request came through a relay agent (giaddr set);
	// this server only serves its own segment.
	ErrRelayed = errors.New("dhcp: relayed requests (giaddr) are not supported")
	// ErrConfig: New was given an unusable Config.
	ErrConfig = errors.New("dhcp: bad config")
)
