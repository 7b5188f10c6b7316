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
	_, err = peekSocket(rc)
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
}

// peekSocket looks at rc's socket without waiting or consuming anything: n
// is 1 when a byte waits and 0 at the end of the stream; err is EAGAIN when
// nothing waits, else the socket's error.
func peekSocket(rc syscall.RawConn) (n int, err error) {
	if cerr := rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); cerr != nil {
		return 0, cerr
	}
	return n, err
}
