package tunnel

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/airlock-proxy/airlock/proto"
)

func TestShutdownDrains(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		started := make(chan struct{})
		release := make(chan struct{})
		r, e := pair(t, transport, HandlerFunc(func(ctx context.Context, _ *Peer, s Stream) {
			req, err := io.ReadAll(s)
			if err != nil {
				s.Abort(proto.CodeCancel)
				return
			}
			close(started)
			<-release
			s.Write(append([]byte("answer to "), req...))
			s.CloseWrite()
			s.Close()
		}))

		s, _, err := e.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.Write([]byte("question"))
		s.CloseWrite()
		<-started

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut := make(chan error, 1)
		go func() { shut <- r.Shutdown(ctx) }()

		// GOAWAY: the edge stops opening streams on the session at once.
		eventually(t, time.Second, "Ready() == false after GOAWAY", func() bool { return !e.Ready() })
		if _, _, err := e.OpenStream(context.Background()); !errors.Is(err, ErrNoSession) {
			t.Errorf("OpenStream while draining: got %v, want ErrNoSession", err)
		}
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v with a stream in flight", err)
		default:
		}

		// The stream in flight completes.
		close(release)
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "answer to question" {
			t.Errorf("got %q, %v; want \"answer to question\", nil", got, err)
		}
		// Its last stream done, the edge closes the drained session, and
		// Shutdown returns.
		s.Close()
		if err := <-shut; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if n := r.Sessions(); n != 0 {
			t.Errorf("Sessions() = %d after Shutdown, want 0", n)
		}
	})
}

func TestShutdownDeadline(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		r, e := pair(t, transport, HandlerFunc(func(ctx context.Context, _ *Peer, s Stream) {
			<-ctx.Done() // a stream that never ends by itself
			s.Abort(proto.CodeCancel)
		}))
		s, _, err := e.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.Write([]byte("x"))
		eventually(t, time.Second, "stream in flight", func() bool { return r.inflight.count() == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := r.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: got %v, want context.DeadlineExceeded", err)
		}
		if _, err := io.ReadAll(s); err == nil {
			t.Error("the stream cut by Close read to a clean EOF")
		}
	})
}

// rawDial connects to the relay as an edge would, without the Client's
// control handshake.
func rawDial(t *testing.T, r *testRelay, edge *Identity) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, r.Addr().String(), clientTLSConfig(edge, r.id.Fingerprint()), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn
}

func TestRelayRefusesUnknownVersion(t *testing.T) {
	edgeID := mustIdentity(t)
	r := startRelay(t, mustIdentity(t), "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), echo)
	conn := rawDial(t, r, edgeID)
	st, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.NewControlWriter(st).WriteMessage(&proto.Hello{Version: 99, EdgeName: "future"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(2 * time.Second):
		t.Fatal("relay did not close the connection")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || ae.ErrorCode != quic.ApplicationErrorCode(closeVersion) ||
		!strings.Contains(ae.ErrorMessage, "unsupported protocol version 99") {
		t.Errorf("close error = %v, want code %d naming version 99", err, closeVersion)
	}
}

func TestRelayHandshakeTimeout(t *testing.T) {
	edgeID := mustIdentity(t)
	r := startRelay(t, mustIdentity(t), "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), echo,
		func(o *ServerOptions) { o.Config.HandshakeTimeout = 100 * time.Millisecond })
	conn := rawDial(t, r, edgeID) // and never send HELLO
	select {
	case <-conn.Context().Done():
	case <-time.After(2 * time.Second):
		t.Fatal("relay did not close the connection")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || ae.ErrorCode != quic.ApplicationErrorCode(closeHandshakeTimeout) {
		t.Errorf("close error = %v, want code %d", err, closeHandshakeTimeout)
	}
}

func TestRelayRejectsWrongALPN(t *testing.T) {
	edgeID := mustIdentity(t)
	r := startRelay(t, mustIdentity(t), "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), echo)
	tc := clientTLSConfig(edgeID, r.id.Fingerprint())
	tc.NextProtos = []string{"h3"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, r.Addr().String(), tc, &quic.Config{})
	if err == nil {
		conn.CloseWithError(0, "")
		t.Fatal("dial with ALPN h3 succeeded")
	}
}

func TestServerLifecycle(t *testing.T) {
	id := mustIdentity(t)
	auth := edgeAuth(id.Fingerprint())
	if _, err := NewServer(ServerOptions{Identity: id}, echo); err == nil {
		t.Error("NewServer without Authorize succeeded")
	}
	if _, err := NewServer(ServerOptions{Identity: id, Authorize: auth, MaxStreams: -1}, echo); err == nil {
		t.Error("NewServer with MaxStreams -1 succeeded")
	}
	s, err := NewServer(ServerOptions{Identity: id, Listen: "127.0.0.1:0", Authorize: auth}, echo)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Errorf("Addr() before Listen = %v, want nil", s.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	eventually(t, time.Second, "listening", func() bool { return s.Addr() != nil })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after ctx end: %v", err)
	}
	s.Close()
	if err := s.Listen(); !errors.Is(err, ErrClosed) {
		t.Errorf("Listen after Close: got %v, want ErrClosed", err)
	}
}

// TestStreamLimitOverTCP: yamux has no stream credit, so the relay refuses a
// stream over MaxStreams in-band, and serves again once one ends.
func TestStreamLimitOverTCP(t *testing.T) {
	relayID, edgeID := mustIdentity(t), mustIdentity(t)
	r := startRelay(t, relayID, "127.0.0.1:0", edgeAuth(edgeID.Fingerprint()), echo,
		func(o *ServerOptions) { o.MaxStreams = 2 })
	e := startEdge(t, edgeID, r.Addr().String(), relayID.Fingerprint(), TransportTCP)
	waitReady(t, e.Client)
	var held []Stream
	for range 2 {
		s, _, err := e.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := echoByte(s); err != nil {
			t.Fatal(err)
		}
		held = append(held, s)
	}
	s, _, err := e.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("x"))
	_, err = proto.NewReader(s, proto.Limits{}).ReadResponseHead()
	s.Close()
	var rst *proto.ResetError
	if !errors.As(err, &rst) || rst.Code != proto.CodeRefused || !strings.Contains(rst.Message, "limit of 2 streams") {
		t.Fatalf("third stream: %v, want a RESET refused naming the limit", err)
	}
	held[0].CloseWrite()
	held[0].Close()
	eventually(t, 2*time.Second, "a stream served again", func() bool {
		s, _, err := e.OpenStream(context.Background())
		if err != nil {
			return false
		}
		defer s.Close()
		return echoByte(s) == nil
	})
	held[1].Close()
}
