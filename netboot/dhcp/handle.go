package dhcp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// pxeVendorOptions is option 43 for PXE clients: PXE_DISCOVERY_CONTROL (6)
// = 8, "boot the file named in this offer, no menu, no boot server
// discovery", then End. OVMF rejects an offer that says "PXEClient" in
// option 60 without an option 43 ("PXE-E16: No valid offer received").
// A string constant, so no caller can change the bytes every reply shares.
const pxeVendorOptions = "\x06\x01\x08\xff"

// Option codes the dhcpv4 package has no name for.
const (
	optClientMachineID = dhcpv4.GenericOptionCode(97) // PXE client UUID/GUID
)

// classify reads what the request says about its sender.
func classify(req *dhcpv4.DHCPv4) Client {
	c := Client{
		MAC:  append(net.HardwareAddr(nil), req.ClientHWAddr...),
		Arch: ArchUnknown,
	}
	// Option 93 may list several architectures; the first is the one
	// that is running.
	if v := req.Options.Get(dhcpv4.OptionClientSystemArchitectureType); len(v) >= 2 {
		c.Arch = Arch(binary.BigEndian.Uint16(v))
	}
	vc := req.ClassIdentifier()
	c.PXE = strings.HasPrefix(vc, "PXEClient")
	c.HTTPClient = strings.HasPrefix(vc, "HTTPClient")
	c.IPXE = isIPXE(req.Options.Get(dhcpv4.OptionUserClassInformation))
	return c
}

// isIPXE finds "iPXE" in option 77. iPXE sends the bare string, not the
// RFC 3004 length-prefixed list, but accept both.
func isIPXE(uc []byte) bool {
	if string(uc) == "iPXE" {
		return true
	}
	for len(uc) > 0 {
		n := int(uc[0])
		if n == 0 || n > len(uc)-1 {
			return false
		}
		if string(uc[1:1+n]) == "iPXE" {
			return true
		}
		uc = uc[1+n:]
	}
	return false
}

// Handle answers one request. It is a function of the server's state and
// the request alone (no sockets), so tests and fuzzing can drive it; Serve
// calls it for every packet. A nil reply with a nil error means "stay
// silent" (a message that gets no answer, a client that is not ours); an
// error means the request was dropped for the reason given.
//
// Lease changes are made in memory; Serve writes them to LeaseFile in the
// background and Flush writes them at once.
func (s *Server) Handle(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	return s.handle(req, portAny)
}

// Which listener a request came in on. Handle, which has no listener,
// accepts what either would.
const (
	portAny  = 0
	portDHCP = dhcpv4.ServerPort // 67
	portPXE  = 4011              // PXE boot server discovery
)

func (s *Server) handle(req *dhcpv4.DHCPv4, port int) (*dhcpv4.DHCPv4, error) {
	if req == nil {
		return nil, fmt.Errorf("%w: nil request", ErrMalformed)
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, fmt.Errorf("%w: opcode %v is not a request", ErrMalformed, req.OpCode)
	}
	if n := len(req.ClientHWAddr); n == 0 || n > 16 {
		return nil, fmt.Errorf("%w: hardware address length %d", ErrMalformed, n)
	}
	if gw := req.GatewayIPAddr; gw != nil && !gw.IsUnspecified() {
		return nil, fmt.Errorf("%w: giaddr %v", ErrRelayed, gw)
	}
	mt := req.MessageType()
	if mt == dhcpv4.MessageTypeNone {
		return nil, fmt.Errorf("%w: no message type (BOOTP is not supported)", ErrMalformed)
	}
	if s.mode == Proxy {
		return s.handleProxy(req, mt, port)
	}
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		return s.discover(req)
	case dhcpv4.MessageTypeRequest:
		return s.request(req)
	case dhcpv4.MessageTypeRelease:
		s.release(req)
		return nil, nil
	case dhcpv4.MessageTypeDecline:
		s.decline(req)
		return nil, nil
	case dhcpv4.MessageTypeInform:
		return s.inform(req)
	}
	// OFFER, ACK, NAK and the lease query messages are not for a server.
	return nil, nil
}

// boot asks the Booter about a netboot client.
func (s *Server) boot(req *dhcpv4.DHCPv4) (Client, Boot, bool) {
	c := classify(req)
	if s.cfg.Booter == nil || !c.Netboot() {
		return c, Boot{}, false
	}
	b, ok := s.cfg.Booter(c)
	return c, b, ok
}

// reply starts an answer to req.
func (s *Server) reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	// Built by hand rather than with dhcpv4.NewReplyFromRequest, which
	// draws a random transaction ID from crypto/rand only to overwrite it.
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  ipOf(s.serverIP),
		GatewayIPAddr: net.IPv4zero,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       dhcpv4.Options{},
	}
	r.UpdateOption(dhcpv4.OptMessageType(mt))
	r.UpdateOption(dhcpv4.OptServerIdentifier(ipOf(s.serverIP)))
	// RFC 6842: echo the client identifier.
	if v := req.Options.Get(dhcpv4.OptionClientIdentifier); v != nil {
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientIdentifier, v))
	}
	return r
}

// addBoot puts the boot options for c into r.
func (s *Server) addBoot(r, req *dhcpv4.DHCPv4, c Client, b Boot) {
	next := b.NextServer.To4()
	if next == nil {
		next = ipOf(s.serverIP)
	}
	r.ServerIPAddr = next
	r.UpdateOption(dhcpv4.OptTFTPServerName(next.String()))
	if b.Filename != "" {
		r.UpdateOption(dhcpv4.OptBootFileName(b.Filename))
		// The header's file field holds 127 bytes; a longer name would be
		// cut into a wrong path, so it then lives in option 67 alone.
		if len(b.Filename) < 128 {
			r.BootFileName = b.Filename
		}
	}
	switch {
	case c.HTTPClient:
		// UEFI HTTP boot only takes offers that say HTTPClient.
		r.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient"))
	case c.PXE:
		r.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte(pxeVendorOptions)))
	}
	// PXE 2.1: a server echoes the client machine identifier.
	if v := req.Options.Get(optClientMachineID); v != nil {
		r.UpdateOption(dhcpv4.OptGeneric(optClientMachineID, v))
	}
}

// addLeaseOptions puts the subnet's configuration into r.
func (s *Server) addLeaseOptions(r *dhcpv4.DHCPv4, withTimes bool) {
	r.UpdateOption(dhcpv4.OptSubnetMask(s.staticOpts.netmask))
	if s.staticOpts.router != nil {
		r.UpdateOption(dhcpv4.OptRouter(s.staticOpts.router))
	}
	if len(s.staticOpts.dns) > 0 {
		r.UpdateOption(dhcpv4.OptDNS(s.staticOpts.dns...))
	}
	if withTimes {
		r.UpdateOption(dhcpv4.OptIPAddressLeaseTime(s.leaseTime))
		r.UpdateOption(dhcpv4.OptRenewTimeValue(s.leaseTime / 2))
		r.UpdateOption(dhcpv4.OptRebindingTimeValue(s.leaseTime * 7 / 8))
	}
}

// --- Full mode ---

func (s *Server) discover(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	c, b, bootOK := s.boot(req)
	mac := req.ClientHWAddr

	s.mu.Lock()
	now := s.now()
	ip, ok := s.pick(req, now)
	if !ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("no offer for %v: %w", mac, ErrPoolExhausted)
	}
	l := s.byMAC[string(mac)]
	if l == nil || l.ip != ip || l.offered || !now.Before(l.expiry) {
		// Hold the address for this client; a live lease stays as it is.
		l = s.assign(mac, ip, now.Add(offerHold), true)
	}
	hostname := l.hostname
	s.mu.Unlock()

	r := s.reply(req, dhcpv4.MessageTypeOffer)
	r.YourIPAddr = ipOf(ip)
	s.addLeaseOptions(r, true)
	if hostname != "" {
		r.UpdateOption(dhcpv4.OptHostName(hostname))
	}
	if bootOK {
		s.addBoot(r, req, c, b)
	}
	return r, nil
}

// pick chooses the address to offer: the client's reservation, else its
// existing lease (even an expired one, if nobody took the address), else
// the address it asks for, else a free one.
func (s *Server) pick(req *dhcpv4.DHCPv4, now time.Time) (netip.Addr, bool) {
	mac := req.ClientHWAddr
	if ip, ok := s.resByMAC[string(mac)]; ok {
		return ip, true
	}
	if l := s.byMAC[string(mac)]; l != nil && s.usableFor(mac, l.ip, now) {
		return l.ip, true
	}
	if want, ok := addr4(req.RequestedIPAddress()); ok && s.usableFor(mac, want, now) {
		return want, true
	}
	return s.allocate(mac, now)
}

func (s *Server) request(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	mac := req.ClientHWAddr
	sid := req.ServerIdentifier()
	var ip netip.Addr
	var ok bool
	switch {
	case sid != nil:
		// SELECTING: the client names the server it chose.
		if !sid.Equal(ipOf(s.serverIP)) {
			s.mu.Lock()
			if l := s.byMAC[string(mac)]; l != nil && l.offered {
				s.drop(l) // it chose another server: free our hold
			}
			s.mu.Unlock()
			return nil, nil
		}
		if ip, ok = addr4(req.RequestedIPAddress()); !ok {
			ip, ok = addr4(req.ClientIPAddr)
		}
	case req.RequestedIPAddress() != nil:
		// INIT-REBOOT: a client that remembers its address.
		ip, ok = addr4(req.RequestedIPAddress())
	default:
		// RENEWING or REBINDING: ciaddr is the address in use.
		ip, ok = addr4(req.ClientIPAddr)
	}
	if !ok || ip.IsUnspecified() {
		return nil, fmt.Errorf("%w: REQUEST from %v names no address", ErrMalformed, mac)
	}
	c, b, bootOK := s.boot(req)

	s.mu.Lock()
	now := s.now()
	reason := ""
	switch l := s.byMAC[string(mac)]; {
	case !s.subnet.Contains(ip):
		reason = "address not on this network"
	case l != nil && l.ip != ip && now.Before(l.expiry):
		// We offered or leased it another address: it is confused and
		// must start over.
		reason = "not the address offered to this client"
	case !s.usableFor(mac, ip, now):
		reason = "address not available"
	}
	if reason != "" {
		s.mu.Unlock()
		s.logf("dhcp: NAK %v for %v: %s", mac, ip, reason)
		r := s.reply(req, dhcpv4.MessageTypeNak)
		r.ServerIPAddr = net.IPv4zero
		r.UpdateOption(dhcpv4.OptMessage(reason))
		// RFC 2131 4.3.2: a NAK is broadcast, so force the flag.
		r.SetBroadcast()
		return r, nil
	}
	l := s.assign(mac, ip, now.Add(s.leaseTime), false)
	hostname := l.hostname
	s.mu.Unlock()
	s.logf("dhcp: ACK %v -> %v (%v)", mac, ip, s.leaseTime)

	r := s.reply(req, dhcpv4.MessageTypeAck)
	r.YourIPAddr = ipOf(ip)
	r.ClientIPAddr = req.ClientIPAddr
	s.addLeaseOptions(r, true)
	if hostname != "" {
		r.UpdateOption(dhcpv4.OptHostName(hostname))
	}
	if bootOK {
		s.addBoot(r, req, c, b)
	}
	return r, nil
}

func (s *Server) release(req *dhcpv4.DHCPv4) {
	if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(ipOf(s.serverIP)) {
		return
	}
	ip, ok := addr4(req.ClientIPAddr)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.byMAC[string(req.ClientHWAddr)]; l != nil && l.ip == ip && !l.offered {
		// Keep the record, expired, so the client gets the same address
		// next time if nobody else has taken it by then.
		l.expiry = s.now()
		s.markDirty()
		s.logf("dhcp: RELEASE %v %v", req.ClientHWAddr, ip)
	}
}

func (s *Server) decline(req *dhcpv4.DHCPv4) {
	if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(ipOf(s.serverIP)) {
		return
	}
	ip, ok := addr4(req.RequestedIPAddress())
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Only the client we gave the address to can take it out of the
	// pool; anyone else could empty the pool with forged DECLINEs.
	if l := s.byMAC[string(req.ClientHWAddr)]; l != nil && l.ip == ip {
		s.drop(l)
		s.declined[ip] = s.now().Add(declineHold)
		s.logf("dhcp: DECLINE %v %v: address in use by someone else, held back for %v", req.ClientHWAddr, ip, declineHold)
	}
}

func (s *Server) inform(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	ci, ok := addr4(req.ClientIPAddr)
	if !ok || ci.IsUnspecified() {
		return nil, fmt.Errorf("%w: INFORM from %v without ciaddr", ErrMalformed, req.ClientHWAddr)
	}
	r := s.reply(req, dhcpv4.MessageTypeAck)
	r.ClientIPAddr = req.ClientIPAddr
	// RFC 2131 4.3.5: no lease time, no yiaddr in the answer to INFORM.
	s.addLeaseOptions(r, false)
	if c, b, ok := s.boot(req); ok {
		s.addBoot(r, req, c, b)
	}
	return r, nil
}

// --- Proxy mode ---

// handleProxy answers PXE and HTTP boot clients only, with boot options
// and no address: the site's DHCP server hands out the address.
func (s *Server) handleProxy(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, port int) (*dhcpv4.DHCPv4, error) {
	c := classify(req)
	if !c.PXE && !c.HTTPClient {
		return nil, nil
	}
	var rt dhcpv4.MessageType
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		if port == portPXE {
			return nil, nil
		}
		rt = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		sid := req.ServerIdentifier()
		if sid != nil && !sid.Equal(ipOf(s.serverIP)) {
			return nil, nil // the client is taking the site server's offer
		}
		// A REQUEST without server identifier on port 67 is a renewal
		// meant for the site's server; on port 4011 it is the PXE boot
		// server request, which carries the client's address in ciaddr.
		if sid == nil && port == portDHCP {
			return nil, nil
		}
		rt = dhcpv4.MessageTypeAck
	case dhcpv4.MessageTypeInform:
		rt = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	b, ok := s.cfg.Booter(c)
	if !ok {
		return nil, nil
	}
	r := s.reply(req, rt)
	// yiaddr stays 0.0.0.0: a proxy offer hands out no address.
	if rt == dhcpv4.MessageTypeAck {
		r.ClientIPAddr = req.ClientIPAddr
	}
	s.addBoot(r, req, c, b) // option 60 and, for PXE, 43
	return r, nil
}
