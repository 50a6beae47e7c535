//go:build !linux

package tftp

import "net"

func newReceiver(conn net.PacketConn) receiver {
	return plainReceiver{conn: conn, local: boundAddr(conn)}
}
