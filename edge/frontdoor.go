// The front door: the servers of the client listener.

package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/airlock-proxy/airlock/internal/http1"
)

// frontDoor serves the client connections: HTTP/1.x with airlock's own
// server, which spares each request the goroutine that net/http's starts
// to watch its connection (issue 9), and HTTP/2 with prior knowledge (h2c),
// for clients that multiplex many streams over one connection, with
// net/http's, to which the first hands the connections that open with the
// HTTP/2 preface.
type frontDoor struct {
	h1      *http1.Server
	h2c     *http.Server
	handoff *handoffListener
}

// newFrontDoor returns the servers of h with c's client timeouts.
func newFrontDoor(h http.Handler, c *Config, logger *slog.Logger) *frontDoor {
	f := &frontDoor{handoff: newHandoffListener()}
	f.h1 = &http1.Server{
		Handler:           h,
		ReadHeaderTimeout: c.ClientHeaderTimeout.Duration,
		IdleTimeout:       c.ClientIdleTimeout.Duration,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnContext:       withConn,
		HTTP2:             f.handoff.hand,
		Logger:            logger,
	}
	f.h2c = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.ClientHeaderTimeout.Duration,
		IdleTimeout:       c.ClientIdleTimeout.Duration,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		Protocols:         new(http.Protocols),
	}
	f.h2c.Protocols.SetUnencryptedHTTP2(true)
	return f
}

// serve serves ln until shutdown or close; it returns once both servers
// have stopped, with what stopped them if not that.
func (f *frontDoor) serve(ln net.Listener) error {
	h2Err := make(chan error, 1)
	go func() {
		err := f.h2c.Serve(f.handoff)
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
			// Closed, or the HTTP/1 server stopped handing over.
			err = nil
		}
		h2Err <- err
	}()
	err := f.h1.Serve(ln)
	if errors.Is(err, http1.ErrServerClosed) {
		err = nil
	}
	// The HTTP/2 server has nothing more to serve.
	f.handoff.Close()
	return errors.Join(err, <-h2Err)
}

// shutdown stops accepting and waits for the requests in flight on both
// servers, or for ctx.
func (f *frontDoor) shutdown(ctx context.Context) error {
	err := f.h1.Shutdown(ctx)
	if err == nil {
		err = f.h2c.Shutdown(ctx)
	}
	if err != nil {
		return fmt.Errorf("edge shutdown: %w", err)
	}
	return nil
}

// close cuts every client connection, of HTTP/1 and of HTTP/2.
func (f *frontDoor) close() {
	f.h1.Close()
	f.h2c.Close()
	f.handoff.Close()
}

// handoffListener is the HTTP/2 server's listener: its connections are the
// client connections that the HTTP/1 server found open with the HTTP/2
// preface.
type handoffListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoffListener() *handoffListener {
	return &handoffListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// hand gives c to the HTTP/2 server, or closes it once that has stopped.
func (l *handoffListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next connection handed over.
func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept fail and hand close what it is given.
func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is a placeholder: the connections come from the client listener.
func (l *handoffListener) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "h2c" }
