package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/airlock-proxy/airlock/proto"
)

// yamux frame types and flags (yamux's const.go).
const (
	yTypeData         = 0
	yTypeWindowUpdate = 1
	yTypePing         = 2
	yTypeGoAway       = 3
	yFlagSYN          = 1
	yFlagFIN          = 4
)

// yamuxHeader encodes a yamux frame header.
func yamuxHeader(typ uint8, flags uint16, id, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[0] = yamuxVersion
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], id)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// seq returns n bytes counting up from start.
func seq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// recordConn records each Write, then passes it to Conn if it is not nil.
// fail, when set, decides each Write's result from its index and size
// instead.
type recordConn struct {
	net.Conn

	mu     sync.Mutex
	writes [][]byte
	fail   func(i, size int) (int, error)
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := len(r.writes)
	n, err := len(p), error(nil)
	if r.fail != nil {
		n, err = r.fail(i, len(p))
	}
	r.writes = append(r.writes, bytes.Clone(p[:n]))
	if r.Conn != nil && err == nil {
		return r.Conn.Write(p)
	}
	return n, err
}

func (r *recordConn) recorded() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

func TestFrameWriter(t *testing.T) {
	big := seq(0, 40000)
	first := frameBufSize - yamuxHeaderSize
	tests := []struct {
		name   string
		writes [][]byte // what yamux writes, in order
		want   [][]byte // the Writes that reach the connection
	}{
		{
			name:   "DATA header and body",
			writes: [][]byte{yamuxHeader(yTypeData, 0, 3, 5), []byte("hello")},
			want:   [][]byte{cat(yamuxHeader(yTypeData, 0, 3, 5), []byte("hello"))},
		},
		{
			name:   "DATA with SYN and a body",
			writes: [][]byte{yamuxHeader(yTypeData, yFlagSYN, 3, 100), seq(1, 100)},
			want:   [][]byte{cat(yamuxHeader(yTypeData, yFlagSYN, 3, 100), seq(1, 100))},
		},
		{
			name:   "12-byte body",
			writes: [][]byte{yamuxHeader(yTypeData, 0, 3, 12), seq(7, 12)},
			want:   [][]byte{cat(yamuxHeader(yTypeData, 0, 3, 12), seq(7, 12))},
		},
		{
			name:   "body that fills the buffer",
			writes: [][]byte{yamuxHeader(yTypeData, 0, 3, uint32(first)), seq(0, first)},
			want:   [][]byte{cat(yamuxHeader(yTypeData, 0, 3, uint32(first)), seq(0, first))},
		},
		{
			name:   "body longer than the buffer",
			writes: [][]byte{yamuxHeader(yTypeData, 0, 3, uint32(len(big))), big},
			want:   [][]byte{cat(yamuxHeader(yTypeData, 0, 3, uint32(len(big))), big[:first]), big[first:]},
		},
		{
			name: "frames in a row reuse the buffer",
			writes: [][]byte{
				yamuxHeader(yTypeData, 0, 3, 3), []byte("abc"),
				yamuxHeader(yTypeWindowUpdate, 0, 3, 1000),
				yamuxHeader(yTypeData, 0, 5, 2), []byte("de"),
			},
			want: [][]byte{
				cat(yamuxHeader(yTypeData, 0, 3, 3), []byte("abc")),
				yamuxHeader(yTypeWindowUpdate, 0, 3, 1000),
				cat(yamuxHeader(yTypeData, 0, 5, 2), []byte("de")),
			},
		},
		{
			name:   "window update at once",
			writes: [][]byte{yamuxHeader(yTypeWindowUpdate, yFlagSYN, 3, 1<<20)},
			want:   [][]byte{yamuxHeader(yTypeWindowUpdate, yFlagSYN, 3, 1<<20)},
		},
		{
			name:   "zero-length DATA with FIN at once",
			writes: [][]byte{yamuxHeader(yTypeData, yFlagFIN, 3, 0)},
			want:   [][]byte{yamuxHeader(yTypeData, yFlagFIN, 3, 0)},
		},
		{
			name:   "ping and go-away at once",
			writes: [][]byte{yamuxHeader(yTypePing, yFlagSYN, 0, 7), yamuxHeader(yTypeGoAway, 0, 0, 0)},
			want:   [][]byte{yamuxHeader(yTypePing, yFlagSYN, 0, 7), yamuxHeader(yTypeGoAway, 0, 0, 0)},
		},
		{
			name:   "odd sizes pass through",
			writes: [][]byte{seq(0, 7), seq(0, 13), seq(0, 1)},
			want:   [][]byte{seq(0, 7), seq(0, 13), seq(0, 1)},
		},
		{
			name:   "12 bytes of another version pass through",
			writes: [][]byte{cat([]byte{1, yTypeData}, seq(0, 10))},
			want:   [][]byte{cat([]byte{1, yTypeData}, seq(0, 10))},
		},
		{
			name:   "header instead of the body: both at once",
			writes: [][]byte{yamuxHeader(yTypeData, 0, 3, 5), yamuxHeader(yTypeWindowUpdate, 0, 3, 9)},
			want:   [][]byte{yamuxHeader(yTypeData, 0, 3, 5), yamuxHeader(yTypeWindowUpdate, 0, 3, 9)},
		},
		{
			name:   "DATA header instead of the body is not held",
			writes: [][]byte{yamuxHeader(yTypeData, 0, 3, 5), yamuxHeader(yTypeData, 0, 5, 5)},
			want:   [][]byte{yamuxHeader(yTypeData, 0, 3, 5), yamuxHeader(yTypeData, 0, 5, 5)},
		},
		{
			name:   "body of the wrong size: header, then it",
			writes: [][]byte{yamuxHeader(yTypeData, 0, 3, 5), []byte("abc")},
			want:   [][]byte{yamuxHeader(yTypeData, 0, 3, 5), []byte("abc")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &recordConn{}
			fw := newFrameWriter(rc)
			for i, p := range tt.writes {
				n, err := fw.Write(p)
				if n != len(p) || err != nil {
					t.Fatalf("Write %d (%d bytes) = %d, %v", i, len(p), n, err)
				}
			}
			got := rc.recorded()
			if len(got) != len(tt.want) {
				t.Fatalf("%d Writes reached the connection, want %d: %x", len(got), len(tt.want), got)
			}
			for i := range got {
				if !bytes.Equal(got[i], tt.want[i]) {
					t.Errorf("Write %d = %x, want %x", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestFrameWriterErrors checks that every failure of the connection reaches
// yamux, with the count of the Write's own bytes that went out.
func TestFrameWriterErrors(t *testing.T) {
	errBroken := errors.New("broken pipe")
	failAt := func(at, n int) func(i, size int) (int, error) {
		return func(i, size int) (int, error) {
			if i == at {
				return n, errBroken
			}
			return size, nil
		}
	}
	big := seq(0, 40000)
	first := frameBufSize - yamuxHeaderSize
	type write struct {
		p     []byte
		n     int
		isErr bool
	}
	tests := []struct {
		name   string
		fail   func(i, size int) (int, error)
		writes []write
	}{
		{
			name: "combined write fails: the body's Write reports it",
			fail: failAt(0, 0),
			writes: []write{
				{p: yamuxHeader(yTypeData, 0, 3, 5), n: yamuxHeaderSize},
				{p: []byte("hello"), n: 0, isErr: true},
			},
		},
		{
			name: "combined write fails within the body",
			fail: failAt(0, yamuxHeaderSize+2),
			writes: []write{
				{p: yamuxHeader(yTypeData, 0, 3, 5), n: yamuxHeaderSize},
				{p: []byte("hello"), n: 2, isErr: true},
			},
		},
		{
			name: "combined write short without an error",
			fail: func(i, size int) (int, error) { return 4, nil },
			writes: []write{
				{p: yamuxHeader(yTypeData, 0, 3, 5), n: yamuxHeaderSize},
				{p: []byte("hello"), n: 0, isErr: true},
			},
		},
		{
			name: "rest of a long body fails",
			fail: failAt(1, 100),
			writes: []write{
				{p: yamuxHeader(yTypeData, 0, 3, uint32(len(big))), n: yamuxHeaderSize},
				{p: big, n: first + 100, isErr: true},
			},
		},
		{
			name: "held header fails before another frame",
			fail: failAt(0, 0),
			writes: []write{
				{p: yamuxHeader(yTypeData, 0, 3, 5), n: yamuxHeaderSize},
				{p: yamuxHeader(yTypeWindowUpdate, 0, 3, 9), n: 0, isErr: true},
			},
		},
		{
			name: "window update fails",
			fail: failAt(0, 0),
			writes: []write{
				{p: yamuxHeader(yTypeWindowUpdate, 0, 3, 9), n: 0, isErr: true},
			},
		},
		{
			name: "zero-length DATA fails",
			fail: failAt(0, 3),
			writes: []write{
				{p: yamuxHeader(yTypeData, yFlagFIN, 3, 0), n: 3, isErr: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fw := newFrameWriter(&recordConn{fail: tt.fail})
			for i, w := range tt.writes {
				n, err := fw.Write(w.p)
				if n != w.n || (err != nil) != w.isErr {
					t.Fatalf("Write %d (%d bytes) = %d, %v; want %d, error %t", i, len(w.p), n, err, w.n, w.isErr)
				}
				if w.isErr && !errors.Is(err, errBroken) && !errors.Is(err, io.ErrShortWrite) {
					t.Fatalf("Write %d: error %v is not the connection's", i, err)
				}
			}
		})
	}
}

// TestFrameWriterAllocs checks that joining a frame allocates nothing: the
// buffer is the frameWriter's own.
func TestFrameWriterAllocs(t *testing.T) {
	fw := newFrameWriter(discardConn{})
	hdr, body := yamuxHeader(yTypeData, 0, 3, 4000), seq(0, 4000)
	big := seq(0, 40000)
	bigHdr := yamuxHeader(yTypeData, 0, 3, uint32(len(big)))
	wu := yamuxHeader(yTypeWindowUpdate, 0, 3, 9)
	allocs := testing.AllocsPerRun(100, func() {
		fw.Write(hdr)
		fw.Write(body)
		fw.Write(bigHdr)
		fw.Write(big)
		fw.Write(wu)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per round, want 0", allocs)
	}
}

type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// checkWholeFrames parses the Writes that reached a connection as yamux
// frames. It fails if a Write ends with a DATA frame's header whose body has
// not begun, and returns the count of frames and of those whose header went
// out with the whole body.
func checkWholeFrames(t *testing.T, writes [][]byte) (frames, whole int) {
	t.Helper()
	rest := 0 // body bytes of the current DATA frame still to come
	for i, w := range writes {
		if rest > 0 {
			k := min(rest, len(w))
			w, rest = w[k:], rest-k
		}
		for len(w) > 0 {
			if len(w) < yamuxHeaderSize {
				t.Fatalf("Write %d ends with %d bytes of a header: %x", i, len(w), w)
			}
			frames++
			h := w[:yamuxHeaderSize]
			w = w[yamuxHeaderSize:]
			if h[1] != yTypeData {
				continue
			}
			length := int(binary.BigEndian.Uint32(h[yamuxLengthField:]))
			if length > 0 && len(w) == 0 {
				t.Fatalf("Write %d is a DATA header alone (%x), its body in another Write", i, h)
			}
			if length <= len(w) {
				whole++
			}
			k := min(length, len(w))
			w, rest = w[k:], length-k
		}
	}
	if rest > 0 {
		t.Fatalf("the last DATA frame misses %d bytes", rest)
	}
	return frames, whole
}

// TestFrameWriterYamux runs request/response exchanges over a real yamux
// session on a net.Pipe, both sides writing through frameWriter: every DATA
// frame's header must go out with its body, so that each frame that fits
// the buffer is one Write.
func TestFrameWriterYamux(t *testing.T) {
	a, b := net.Pipe()
	ca, cb := &recordConn{Conn: a}, &recordConn{Conn: b}
	conf := yamuxConfig(&Config{HandshakeTimeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	client, err := yamux.Client(newFrameWriter(ca), conf)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := yamux.Server(newFrameWriter(cb), conf)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	const bigSize = 100 << 10 // frames larger than the buffer
	sizes := []int{100, 1, yamuxHeaderSize, 4000, bigSize}
	served := make(chan error, 1)
	go func() {
		served <- func() error {
			for range sizes {
				s, err := server.AcceptStream()
				if err != nil {
					return err
				}
				req, err := io.ReadAll(s)
				if err != nil {
					return err
				}
				if _, err := s.Write(append([]byte("re:"), req...)); err != nil {
					return err
				}
				if err := s.Close(); err != nil {
					return err
				}
			}
			return nil
		}()
	}()
	for _, size := range sizes {
		s, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		req := seq(byte(size), size)
		if _, err := s.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		resp, err := io.ReadAll(s)
		if err != nil {
			t.Fatal(err)
		}
		if want := append([]byte("re:"), req...); !bytes.Equal(resp, want) {
			t.Fatalf("size %d: answer of %d bytes, want %d", size, len(resp), len(want))
		}
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	for side, rc := range map[string]*recordConn{"client": ca, "server": cb} {
		writes := rc.recorded()
		frames, whole := checkWholeFrames(t, writes)
		// Only the big exchange's frames larger than the buffer take two
		// Writes; every other frame is one.
		if extra := len(writes) - frames; extra < 0 || extra > (bigSize+3)/(frameBufSize-yamuxHeaderSize) {
			t.Errorf("%s: %d Writes for %d frames", side, len(writes), frames)
		}
		if whole == 0 {
			t.Errorf("%s: no DATA frame went out whole", side)
		}
		t.Logf("%s: %d Writes, %d frames, %d DATA frames whole", side, len(writes), frames, whole)
	}
}

// countConn counts the Writes to a connection: under a tls.Conn, its
// records (and write syscalls).
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestTCPExchangeRecords counts the TLS records, one write syscall each,
// that each side sends for one small exchange over the TCP transport's
// connection (newYamuxConn on TLS over loopback). Each side sends three
// frames, each its own record: the stream's SYN (the edge) or ACK (the relay)
// as a window update, a DATA frame with the message, and a FIN. yamux writes
// the DATA frame's header and body apart, which without frameWriter took a
// fourth record.
func TestTCPExchangeRecords(t *testing.T) {
	relayID, edgeID := mustIdentity(t), mustIdentity(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig()
	log := slog.New(slog.DiscardHandler)

	type side struct {
		c   *yamuxConn
		raw *countConn
		err error
	}
	start := func(raw net.Conn, server bool) side {
		cc := &countConn{Conn: raw}
		var tc *tls.Conn
		if server {
			tc = tls.Server(cc, &tls.Config{
				MinVersion:   tls.VersionTLS13,
				NextProtos:   []string{proto.ALPN},
				Certificates: []tls.Certificate{relayID.Certificate()},
				ClientAuth:   tls.RequireAnyClientCert,
			})
		} else {
			tc = tls.Client(cc, clientTLSConfig(edgeID, relayID.Fingerprint()))
		}
		if err := tc.HandshakeContext(context.Background()); err != nil {
			raw.Close()
			return side{err: err}
		}
		c, err := newYamuxConn(tc, server, &cfg, nil, log)
		return side{c: c, raw: cc, err: err}
	}
	relayc := make(chan side, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			relayc <- side{err: err}
			return
		}
		relayc <- start(raw, true)
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	edge := start(raw, false)
	relay := <-relayc
	for _, s := range []side{edge, relay} {
		if s.c != nil {
			defer s.c.closeWithError(closeNormal, "test over")
		}
		if s.err != nil {
			t.Fatal(s.err)
		}
	}

	ctx := context.Background()
	msg := seq(0, 100)
	exchange := func() error {
		served := make(chan error, 1)
		go func() {
			served <- func() error {
				s, err := relay.c.acceptStream(ctx)
				if err != nil {
					return err
				}
				defer s.Close()
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(s, buf); err != nil {
					return err
				}
				if _, err := s.Write(buf); err != nil {
					return err
				}
				return s.CloseWrite()
			}()
		}()
		s, err := edge.c.openStream(ctx, 0)
		if err != nil {
			return err
		}
		defer s.Close()
		if _, err := s.Write(msg); err != nil {
			return err
		}
		if err := s.CloseWrite(); err != nil {
			return err
		}
		resp, err := io.ReadAll(s) // to the relay's FIN: all its frames are out
		if err != nil {
			return err
		}
		if !bytes.Equal(resp, msg) {
			return fmt.Errorf("answer %x, want %x", resp, msg)
		}
		return <-served
	}
	// The first exchange's records are smaller (TLS dynamic record sizing)
	// and carry the session's start; count the next ones.
	if err := exchange(); err != nil {
		t.Fatal(err)
	}
	const rounds = 10
	e0, r0 := edge.raw.writes.Load(), relay.raw.writes.Load()
	for range rounds {
		if err := exchange(); err != nil {
			t.Fatal(err)
		}
	}
	edgeRecs := float64(edge.raw.writes.Load()-e0) / rounds
	relayRecs := float64(relay.raw.writes.Load()-r0) / rounds
	t.Logf("TLS records per exchange: edge %.1f, relay %.1f", edgeRecs, relayRecs)
	if edgeRecs != 3 || relayRecs != 3 {
		t.Errorf("TLS records per exchange: edge %.1f, relay %.1f; want 3 each (SYN/ACK, DATA, FIN)", edgeRecs, relayRecs)
	}
}
