package tunnel

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

// TestStreamReadDeadline: a read deadline does not disturb a Read whose
// bytes are there, fails a Read that waits past it with an error wrapping
// os.ErrDeadlineExceeded, and, cleared, lets the stream go on; after Abort,
// clearing it does not make Reads wait again.
func TestStreamReadDeadline(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		errc := make(chan error, 1)
		_, e := pair(t, transport, HandlerFunc(func(_ context.Context, _ *Peer, s Stream) {
			errc <- serveWithDeadlines(s)
		}))
		s, _, err := e.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Write([]byte("h")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, make([]byte, 2)); err != nil { // "go"
			t.Fatalf("waiting for the relay's go: %v (relay: %v)", err, relayErr(errc))
		}
		if _, err := s.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if err := s.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "ping" {
			t.Fatalf("got %q, %v; want the echo \"ping\"", got, err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}

		// Abort, then a cleared deadline: Reads still fail at once.
		_, e = pair(t, transport, HandlerFunc(func(_ context.Context, _ *Peer, s Stream) {
			if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
				errc <- err
				return
			}
			s.Abort(proto.CodeCancel)
			s.SetReadDeadline(time.Time{})
			read := make(chan error, 1)
			go func() {
				_, err := s.Read(make([]byte, 1))
				read <- err
			}()
			select {
			case err := <-read:
				if err == nil {
					err = errors.New("Read after Abort succeeded")
				} else {
					err = nil
				}
				errc <- err
			case <-time.After(5 * time.Second):
				errc <- errors.New("Read after Abort and a cleared deadline blocks")
				<-read // the session's end, at cleanup, ends it
			}
		}))
		s, _, err = e.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Write([]byte("h")); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

// serveWithDeadlines is the relay side of TestStreamReadDeadline.
func serveWithDeadlines(s Stream) error {
	defer s.Close()
	buf := make([]byte, 8)
	// The first byte is there with the stream: a far deadline is no
	// matter.
	s.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadFull(s, buf[:1]); err != nil {
		return err
	}
	// Nothing more comes until the relay says go: the Read times out.
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		return errors.New("Read with nothing coming: got " + string(buf[:n]) + ", " + errString(err) + "; want a deadline error")
	}
	s.SetReadDeadline(time.Time{})
	if _, err := s.Write([]byte("go")); err != nil {
		return err
	}
	if _, err := io.ReadFull(s, buf[:4]); err != nil {
		return err
	}
	if _, err := s.Write(buf[:4]); err != nil {
		return err
	}
	return s.CloseWrite()
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// relayErr returns the relay side's error if it has one already.
func relayErr(errc chan error) error {
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// TestOpenStreamAtLimit: over QUIC, a session at the relay's stream limit
// makes OpenStream wait, for the client's bound at most (an error wrapping
// context.DeadlineExceeded, the session still up) or until the caller's
// context ends, and grants the stream as soon as one ends.
func TestOpenStreamAtLimit(t *testing.T) {
	relayID, edgeID := mustIdentity(t), mustIdentity(t)
	r := startRelay(t, relayID, "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), echo,
		func(o *ServerOptions) { o.MaxStreams = 1 })
	e := startEdge(t, edgeID, r.Addr().String(), relayID.Fingerprint(), TransportQUIC)
	waitReady(t, e.Client)
	e.openWait = 50 * time.Millisecond

	held, _, err := e.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := echoByte(held); err != nil {
		t.Fatal(err)
	}

	// The bound.
	_, _, err = e.OpenStream(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNoSession) {
		t.Fatalf("OpenStream at the limit: got %v, want context.DeadlineExceeded", err)
	}
	if !e.Ready() {
		t.Fatal("the session went down")
	}

	// The caller's context ends the wait first.
	e.openWait = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, _, err := e.OpenStream(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("OpenStream at the limit, cancelled: got %v, want context.Canceled", err)
	}

	// A stream ending grants the next.
	type opened struct {
		s   Stream
		err error
	}
	next := make(chan opened, 1)
	go func() {
		s, _, err := e.OpenStream(context.Background())
		next <- opened{s, err}
	}()
	held.CloseWrite()
	if _, err := io.ReadAll(held); err != nil {
		t.Fatal(err)
	}
	held.Close()
	o := <-next
	if o.err != nil {
		t.Fatalf("OpenStream once a stream ended: %v", o.err)
	}
	defer o.s.Close()
	if err := echoByte(o.s); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := e.load(); n != 1 {
		t.Errorf("%d streams counted open, want 1: failed opens must not count", n)
	}
}
