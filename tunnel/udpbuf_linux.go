package tunnel

import (
	"net"
	"syscall"
)

// setUDPBuffers sets c's receive and send buffers to size, forcing past
// net.core.rmem_max and wmem_max when the process may (CAP_NET_ADMIN), and
// returns the sizes the kernel granted. Linux reports twice the usable size;
// the halves are returned.
func setUDPBuffers(c *net.UDPConn, size int) (rcv, snd int, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		s := int(fd)
		for _, o := range []struct{ opt, force int }{
			{syscall.SO_RCVBUF, syscall.SO_RCVBUFFORCE},
			{syscall.SO_SNDBUF, syscall.SO_SNDBUFFORCE},
		} {
			if syscall.SetsockoptInt(s, syscall.SOL_SOCKET, o.force, size) != nil {
				// Not privileged: the plain option, capped by the sysctl.
				syscall.SetsockoptInt(s, syscall.SOL_SOCKET, o.opt, size)
			}
		}
		if rcv, serr = syscall.GetsockoptInt(s, syscall.SOL_SOCKET, syscall.SO_RCVBUF); serr != nil {
			return
		}
		snd, serr = syscall.GetsockoptInt(s, syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	})
	if err == nil {
		err = serr
	}
	return rcv / 2, snd / 2, err
}
