//go:build unix

package http1

import "syscall"

// open reports whether c still looks usable after resting in the pool: one
// non-blocking peek at its socket. Anything readable (the upstream's FIN,
// a reset, a TLS close_notify or stray bytes) means it is not.
func (c *conn) open() bool {
	if c.tcp == nil {
		return true
	}
	rc, err := c.tcp.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, perr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = perr == syscall.EAGAIN || perr == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && open
}
