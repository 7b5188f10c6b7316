package tunnel

import (
	"net"
	"testing"
)

func TestSetUDPBuffers(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 128 KiB is under every kernel's default limit, so it is granted
	// with or without privileges.
	const want = 128 << 10
	rcv, snd, err := setUDPBuffers(c, want)
	if err != nil {
		t.Fatal(err)
	}
	if rcv < want || snd < want {
		t.Errorf("granted receive %d, send %d bytes; want at least %d each", rcv, snd, want)
	}
}
