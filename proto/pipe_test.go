package proto

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const pipeTestTimeout = 10 * time.Second

// tcpPair returns both ends of a loopback TCP connection, which can
// half-close.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ac := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		ac <- accepted{c, err}
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ac
	if b.err != nil {
		t.Fatal(b.err)
	}
	for _, c := range []net.Conn{a, b.c} {
		c.SetDeadline(time.Now().Add(pipeTestTimeout))
		t.Cleanup(func() { c.Close() })
	}
	return a.(*net.TCPConn), b.c.(*net.TCPConn)
}

// pipeRig runs a Pipe between a client connection and a peer at the far end
// of a stream, both driven by the test. Abort closes the stream.
type pipeRig struct {
	client *net.TCPConn // the far end of the Pipe's Conn
	conn   *net.TCPConn // the Pipe's Conn, unless wrapped
	peer   *net.TCPConn // the far end of the stream
	peerW  *Writer
	peerR  *Reader
	aborts chan error
	done   chan [2]PipeEnd
}

// newPipeRig starts a Pipe with the given early bytes on a Conn that wrap
// (if not nil) makes of the TCP connection.
func newPipeRig(t *testing.T, early string, wrap func(net.Conn) io.ReadWriteCloser) *pipeRig {
	t.Helper()
	g := &pipeRig{aborts: make(chan error, 2), done: make(chan [2]PipeEnd, 1)}
	g.conn, g.client = tcpPair(t)
	stream, peer := tcpPair(t)
	g.peer = peer
	w, r := NewWriter(stream, Limits{}), NewReader(stream, Limits{})
	g.peerW, g.peerR = NewWriter(peer, Limits{}), NewReader(peer, Limits{})
	if err := g.peerW.WriteRequestHead(&RequestHead{Method: "GET", Path: "/realtime"}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteResponseHead(&ResponseHead{Status: 101, ContentLength: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadRequestHead(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.peerR.ReadResponseHead(); err != nil {
		t.Fatal(err)
	}
	var conn io.ReadWriteCloser = g.conn
	if wrap != nil {
		conn = wrap(g.conn)
	}
	p := &Pipe{Conn: conn, Early: []byte(early), W: w, R: r, Abort: func(err error) {
		g.aborts <- err
		stream.Close()
	}}
	go func() {
		sent, received := p.Run()
		g.done <- [2]PipeEnd{sent, received}
	}()
	return g
}

// wait returns what Run returned.
func (g *pipeRig) wait(t *testing.T) (sent, received PipeEnd) {
	t.Helper()
	select {
	case ends := <-g.done:
		return ends[0], ends[1]
	case <-time.After(pipeTestTimeout):
		t.Fatal("Run did not return")
		return
	}
}

// expect reads len(want) bytes from r and fails unless they are want.
func expect(t *testing.T, who string, r io.Reader, want string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil || string(got) != want {
		t.Fatalf("%s: got (%q, %v), want %q", who, got, err, want)
	}
}

// TestPipe carries bytes both ways, early bytes first, and half-closes
// each direction on its own: the peer's END, then the client's EOF.
func TestPipe(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := newPipeRig(t, "EARLY", nil)

	io.WriteString(g.client, "hello")
	expect(t, "peer", g.peerR, "EARLYhello")
	g.peerW.Write([]byte("world"))
	expect(t, "client", g.client, "world")

	// The peer's END half-closes the connection; the client can still send.
	if err := g.peerW.End(nil); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(g.client); err != nil || len(rest) != 0 {
		t.Fatalf("client after END: got (%q, %v), want a clean EOF", rest, err)
	}
	io.WriteString(g.client, "after")
	expect(t, "peer", g.peerR, "after")

	// The client's EOF is END.
	g.client.CloseWrite()
	if rest, err := io.ReadAll(g.peerR); err != nil || len(rest) != 0 {
		t.Fatalf("peer after the client's EOF: got (%q, %v), want END", rest, err)
	}
	sent, received := g.wait(t)
	if want := (PipeEnd{N: int64(len("EARLYhelloafter"))}); sent != want {
		t.Errorf("sent: got %+v, want %+v", sent, want)
	}
	if want := (PipeEnd{N: int64(len("world"))}); received != want {
		t.Errorf("received: got %+v, want %+v", received, want)
	}
	select {
	case err := <-g.aborts:
		t.Errorf("Abort(%v) after clean ends, want no call", err)
	default:
	}
}

// failingWrites is a connection whose writes fail.
type failingWrites struct{ net.Conn }

var errConnWrite = errors.New("connection write failed")

func (failingWrites) Write([]byte) (int, error) { return 0, errConnWrite }

// TestPipeFailureCutsBoth: whichever side fails, Abort is called once with
// that failure, the other direction is cut, and Run returns.
func TestPipeFailureCutsBoth(t *testing.T) {
	tests := []struct {
		name     string
		wrap     func(net.Conn) io.ReadWriteCloser
		fail     func(g *pipeRig)
		received bool // the failure is the received direction's
		want     func(error) bool
	}{
		{
			name:     "peer resets",
			fail:     func(g *pipeRig) { g.peerW.Reset(CodeUpstreamError, "gone") },
			received: true,
			want:     func(err error) bool { return errors.Is(err, &ResetError{Code: CodeUpstreamError}) },
		},
		{
			name:     "peer breaks the format",
			fail:     func(g *pipeRig) { g.peer.Write(respHeadFrame) },
			received: true,
			want:     func(err error) bool { return errors.Is(err, ErrProtocol) },
		},
		{
			name:     "stream cut",
			fail:     func(g *pipeRig) { g.peer.Close() },
			received: true,
			want:     func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) },
		},
		{
			name:     "connection write fails",
			wrap:     func(c net.Conn) io.ReadWriteCloser { return failingWrites{c} },
			fail:     func(g *pipeRig) { g.peerW.Write([]byte("x")) },
			received: true,
			want: func(err error) bool {
				var se *SinkError
				return errors.As(err, &se) && errors.Is(err, errConnWrite)
			},
		},
		{
			name: "connection reset",
			fail: func(g *pipeRig) {
				g.client.SetLinger(0) // an abortive close: RST
				g.client.Close()
			},
			want: func(err error) bool {
				var se *SourceError
				return errors.As(err, &se)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			g := newPipeRig(t, "", tt.wrap)
			tt.fail(g)
			sent, received := g.wait(t)
			failed, cut := sent, received
			if tt.received {
				failed, cut = received, sent
			}
			if !tt.want(failed.Err) {
				t.Errorf("failed direction: got error %v (%T)", failed.Err, failed.Err)
			}
			if cut.Err == nil {
				t.Error("other direction: got nil error, want it cut")
			}
			select {
			case err := <-g.aborts:
				if err != failed.Err {
					t.Errorf("Abort(%v), want Abort(%v)", err, failed.Err)
				}
			default:
				t.Fatal("Abort not called")
			}
			if len(g.aborts) > 0 {
				t.Errorf("Abort called again with %v", <-g.aborts)
			}
			// Run closed the connection.
			if _, err := g.client.Read(make([]byte, 1)); err == nil {
				t.Error("client connection still open")
			}
		})
	}
}
