package edge

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestClientConnCloseWrite: a client connection half-closes like the TCP
// connection below it, as proto.Pipe does at the relay's END of an upgraded
// exchange: the client reads EOF and can still send.
func TestClientConnCloseWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &clientListener{Listener: ln, max: 1, sendTimeout: testTimeout}
	defer l.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(testTimeout)
	client.SetDeadline(deadline)
	c.SetDeadline(deadline)

	if _, err := io.WriteString(c, "last words"); err != nil {
		t.Fatal(err)
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", c)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if got, err := io.ReadAll(client); err != nil || string(got) != "last words" {
		t.Errorf("client read %q, %v; want the last words and EOF", got, err)
	}
	// The other direction is open still.
	if _, err := io.WriteString(client, "reply"); err != nil {
		t.Fatalf("client writing after the half-close: %v", err)
	}
	client.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "reply" {
		t.Errorf("edge read %q, %v; want the reply and EOF", got, err)
	}
}

// TestClientConnCloseWriteUnsupported: over a connection that cannot
// half-close, CloseWrite says so and leaves the connection alone.
func TestClientConnCloseWriteUnsupported(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	c := &clientConn{Conn: server, l: &clientListener{sendTimeout: testTimeout}}
	defer c.Close()
	if err := c.CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("CloseWrite = %v, want errors.ErrUnsupported", err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	go io.WriteString(client, "x")
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Errorf("reading after CloseWrite: %v", err)
	}
}
