package agent

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// netUp brings up the first interface that gets a DHCP lease and
// configures its address and default route.
func netUp(ctx context.Context, a *Agent) error {
	deadline := time.Now().Add(30 * time.Second)
	var ifaces []netlink.Link
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		ifaces = ifaces[:0]
		for _, l := range links {
			n := l.Attrs().Name
			if n == "lo" || (a.Params.Iface != "" && n != a.Params.Iface) || l.Type() != "device" {
				continue
			}
			ifaces = append(ifaces, l)
		}
		if len(ifaces) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(ifaces) == 0 {
		return fmt.Errorf("no network interface appeared (is the driver in the initramfs?)")
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	var errs []string
	for _, l := range ifaces {
		if err := netlink.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", l.Attrs().Name, err))
			continue
		}
		lease, err := dhcp(ctx, l.Attrs().Name)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", l.Attrs().Name, err))
			continue
		}
		if err := configure(l, lease); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", l.Attrs().Name, err))
			continue
		}
		a.dhcpHost = lease.ACK.HostName()
		named := ""
		if a.dhcpHost != "" {
			named = ", host name " + a.dhcpHost
		}
		a.say("network: %s is %s, gateway %v%s", l.Attrs().Name, lease.ACK.YourIPAddr, lease.ACK.Router(), named)
		return nil
	}
	return fmt.Errorf("no interface got a DHCP lease: %s", strings.Join(errs, "; "))
}

func dhcp(ctx context.Context, iface string) (*nclient4.Lease, error) {
	c, err := nclient4.New(iface, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The user class tells imprint serve that this is its own agent, not a
	// firmware that wants a boot file.
	return c.Request(ctx, dhcpv4.WithUserClass("imprint-agent", false))
}

func configure(l netlink.Link, lease *nclient4.Lease) error {
	ack := lease.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = net.CIDRMask(24, 32)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ack.YourIPAddr, Mask: mask}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("address %v: %w", addr, err)
	}
	if gws := ack.Router(); len(gws) > 0 {
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gws[0]}); err != nil {
			return fmt.Errorf("default route via %v: %w", gws[0], err)
		}
	}
	return nil
}
