//go:build !linux

package tunnel

import "net"

// setUDPBuffers sets c's receive and send buffers to size and reports them
// as granted: only Linux tells what it granted.
func setUDPBuffers(c *net.UDPConn, size int) (rcv, snd int, err error) {
	if err := c.SetReadBuffer(size); err != nil {
		return 0, 0, err
	}
	if err := c.SetWriteBuffer(size); err != nil {
		return 0, 0, err
	}
	return size, size, nil
}
