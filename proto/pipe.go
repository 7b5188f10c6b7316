// The two-way pipe of an upgraded exchange: after a 101 head, the stream
// carries the raw bytes of a connection (a WebSocket) in both directions.

package proto

import "io"

// Pipe carries an upgraded connection over an exchange stream whose heads
// have been exchanged: bytes read from Conn go out as DATA frames on W, and
// DATA frames read from R are written to Conn. END is a half-close in either
// direction: Conn's EOF makes the Pipe write END on W, and END on R
// half-closes Conn (CloseWrite, where Conn has it). The first direction to
// fail cuts both: the Pipe closes Conn, which ends a blocked read of it, and
// calls Abort, which must end a blocked Read of R and Write to W (aborting
// the stream does). Pipe knows nothing else about the stream.
//
// The fields are set before Run and not changed after.
type Pipe struct {
	// Conn is the upgraded connection. Run closes it before it returns.
	Conn io.ReadWriteCloser
	// Early holds bytes already read from Conn, such as those buffered
	// with an HTTP request head (Caddy issue 6273); they are sent before
	// anything read from Conn. Nil means none.
	Early []byte
	// W is the stream's send direction, after its HEAD. Run writes DATA
	// and, at Conn's EOF, END on it, and nothing after a failure.
	W *Writer
	// R is the stream's receive direction, after its HEAD.
	R *Reader
	// Abort cuts the stream, so that a blocked Read of R or Write to W
	// returns. Run calls it at most once, on its own goroutine, with the
	// first failure of either direction (a [PipeEnd.Err]); the caller
	// picks a reset code from it. It must not be nil.
	Abort func(err error)
}

// PipeEnd is how one direction of a [Pipe] ended.
type PipeEnd struct {
	// N counts the bytes copied: sent as DATA (Early included), or
	// written to Conn.
	N int64
	// Err is nil when the direction ended cleanly: Conn's EOF was sent as
	// END, or END was received and Conn half-closed. Otherwise it is a
	// [*SourceError] when reading Conn failed, a [*SinkError] when writing
	// to Conn failed, a [*ResetError] when the peer reset the stream, an
	// error wrapping [ErrProtocol] when the peer broke the format, and
	// any other error when the stream failed or was cut.
	Err error
}

// Run copies both ways until both directions have ended, and returns how
// each ended: sent is Conn to the stream, received the stream to Conn. It
// runs a goroutine per direction and returns only after both have returned,
// with Conn closed. A Pipe runs once.
func (p *Pipe) Run() (sent, received PipeEnd) {
	s := &pipeSender{p: p}
	r := &pipeReceiver{p: p}
	done := make(chan *PipeEnd, 2)
	go s.run(done)
	go r.run(done)
	cut := false
	for range 2 {
		if end := <-done; end.Err != nil && !cut {
			// The other direction may be blocked in a read of Conn or
			// of the stream: end both.
			cut = true
			p.Conn.Close()
			p.Abort(end.Err)
		}
	}
	p.Conn.Close()
	return s.end, r.end
}

// pipeSender copies a Pipe's Conn to its stream as DATA frames, one per
// read, and writes END at Conn's EOF.
type pipeSender struct {
	p   *Pipe
	end PipeEnd
}

func (c *pipeSender) run(done chan<- *PipeEnd) {
	defer func() { done <- &c.end }()
	p := c.p
	if len(p.Early) > 0 {
		n, err := p.W.Write(p.Early)
		c.end.N += int64(n)
		if err != nil {
			c.end.Err = err
			return
		}
	}
	n, err := p.W.ReadFrom(p.Conn)
	c.end.N += n
	if err == nil {
		err = p.W.End(nil)
	}
	c.end.Err = err
}

// pipeReceiver copies the DATA frames of a Pipe's stream to its Conn and
// half-closes Conn at END.
type pipeReceiver struct {
	p   *Pipe
	end PipeEnd
}

func (c *pipeReceiver) run(done chan<- *PipeEnd) {
	defer func() { done <- &c.end }()
	c.end.N, c.end.Err = c.p.R.WriteTo(c.p.Conn)
	if c.end.Err != nil {
		return
	}
	if cw, ok := c.p.Conn.(interface{ CloseWrite() error }); ok {
		// Best effort: where the connection cannot half-close, the
		// upgraded protocol has its own close handshake.
		cw.CloseWrite()
	}
}
