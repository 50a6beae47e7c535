//go:build !linux

package dhcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// listen needs SO_BINDTODEVICE, which only Linux has.
func listen(context.Context, string, netip.Addr, int) (*net.UDPConn, error) {
	return nil, errors.New("dhcp: serving needs Linux (SO_BINDTODEVICE)")
}
