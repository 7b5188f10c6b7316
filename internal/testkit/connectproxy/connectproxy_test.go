package connectproxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ioTimeout bounds every read in these tests, so that a broken proxy fails
// a test instead of hanging it.
const ioTimeout = 5 * time.Second

func newServer(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// echoServer echoes each connection on loopback until its client
// half-closes, then half-closes too. It stops when the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioTimeout))
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// proxyConn is a client's connection to the proxy, read through the reader
// that read the response head.
type proxyConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *proxyConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// request sends one request (method and target) with an optional
// Proxy-Authorization to s, and returns the connection, positioned after
// the response head, and the response. The connection is closed when the
// test ends.
func request(t *testing.T, s *Server, method, target, auth string) (*proxyConn, *http.Response) {
	t.Helper()
	var c net.Conn
	var err error
	if s.CertPool() != nil {
		c, err = tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: s.CertPool()})
	} else {
		c, err = net.Dial("tcp", s.Addr())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioTimeout))
	head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, target)
	if auth != "" {
		head += "Proxy-Authorization: " + auth + "\r\n"
	}
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	return &proxyConn{Conn: c, r: br}, resp
}

func TestTunnel(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run("tls="+strconv.FormatBool(useTLS), func(t *testing.T) {
			target := echoServer(t)
			_, port, _ := net.SplitHostPort(target)
			portNum, _ := strconv.Atoi(port)
			s := newServer(t, Options{Username: "alice", Password: "s3cret", AllowPorts: []int{portNum}, TLS: useTLS})

			c, resp := request(t, s, http.MethodConnect, target, basic("alice", "s3cret"))
			if resp.StatusCode != http.StatusOK || resp.Status != "200 Connection established" {
				t.Fatalf("CONNECT answered %q, want 200 Connection established", resp.Status)
			}
			if _, err := io.WriteString(c, "hello through the proxy"); err != nil {
				t.Fatal(err)
			}
			// The echo server answers all only after our half-close has
			// come through, and its own half-close ends our read.
			if err := c.Conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "hello through the proxy" {
				t.Errorf("echo = %q", got)
			}
			if s.Tunnels() != 1 || s.Refused() != 0 {
				t.Errorf("Tunnels, Refused = %d, %d; want 1, 0", s.Tunnels(), s.Refused())
			}
		})
	}
}

// TestHalfCloseFromTarget checks that a tunnel goes on carrying the
// client's bytes after the target has half-closed.
func TestHalfCloseFromTarget(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newServer(t, Options{})
	c, resp := request(t, s, http.MethodConnect, ln.Addr().String(), "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT answered %q", resp.Status)
	}
	tc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(ioTimeout))

	if _, err := io.WriteString(tc, "bye"); err != nil {
		t.Fatal(err)
	}
	if err := tc.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(c); err != nil || string(got) != "bye" {
		t.Fatalf("client read %q, %v; want bye and EOF", got, err)
	}
	if _, err := io.WriteString(c, "late"); err != nil {
		t.Fatal(err)
	}
	if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(tc); err != nil || string(got) != "late" {
		t.Errorf("target read %q, %v; want late and EOF", got, err)
	}
}

func TestURL(t *testing.T) {
	s := newServer(t, Options{Username: "alice", Password: "s3cret"})
	if got, want := s.URL(true), "http://alice:s3cret@"+s.Addr(); got != want {
		t.Errorf("URL(true) = %q, want %q", got, want)
	}
	if got, want := s.URL(false), "http://"+s.Addr(); got != want {
		t.Errorf("URL(false) = %q, want %q", got, want)
	}
	tlsServer := newServer(t, Options{TLS: true})
	if got, want := tlsServer.URL(false), "https://"+tlsServer.Addr(); got != want {
		t.Errorf("URL(false) with TLS = %q, want %q", got, want)
	}
}

func TestRefusals(t *testing.T) {
	target := echoServer(t)
	creds := Options{Username: "alice", Password: "s3cret"}
	tests := []struct {
		name        string
		opts        Options
		method      string
		target      string
		auth        string
		wantStatus  int
		wantRefused int64
	}{
		{"wrong password", creds, http.MethodConnect, target, basic("alice", "wrong"), http.StatusProxyAuthRequired, 1},
		{"wrong user", creds, http.MethodConnect, target, basic("bob", "s3cret"), http.StatusProxyAuthRequired, 1},
		{"no credentials", creds, http.MethodConnect, target, "", http.StatusProxyAuthRequired, 1},
		{"not Basic", creds, http.MethodConnect, target, "Bearer s3cret", http.StatusProxyAuthRequired, 1},
		{"port not allowed", Options{AllowPorts: []int{443}}, http.MethodConnect, target, "", http.StatusForbidden, 0},
		{"not CONNECT", Options{}, http.MethodGet, "http://" + target + "/", "", http.StatusMethodNotAllowed, 0},
		{"target down", Options{}, http.MethodConnect, closedAddr(t), "", http.StatusBadGateway, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.opts)
			_, resp := request(t, s, tt.method, tt.target, tt.auth)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %q, want %d", resp.Status, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusProxyAuthRequired {
				if got, want := resp.Header.Get("Proxy-Authenticate"), `Basic realm="connectproxy"`; got != want {
					t.Errorf("Proxy-Authenticate = %q, want %q", got, want)
				}
			}
			if s.Tunnels() != 0 || s.Refused() != tt.wantRefused {
				t.Errorf("Tunnels, Refused = %d, %d; want 0, %d", s.Tunnels(), s.Refused(), tt.wantRefused)
			}
		})
	}
}

// TestCloseEndsTunnels checks that Close ends open tunnels and a connection
// still sending its request, and that no goroutine of the server outlives
// it.
func TestCloseEndsTunnels(t *testing.T) {
	// The target's connections are accepted here, in the test's goroutine,
	// so that the only goroutines besides the test's are the server's.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var conns []net.Conn // the clients' and the target's ends of the tunnels
	for range 2 {
		c, resp := request(t, s, http.MethodConnect, ln.Addr().String(), "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT answered %q", resp.Status)
		}
		tc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		conns = append(conns, c, tc)
	}
	idle, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := io.WriteString(idle, "CONNECT "); err != nil {
		t.Fatal(err)
	}

	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	buf := make([]byte, 1<<20)
	if stacks := buf[:runtime.Stack(buf, true)]; bytes.Contains(stacks, []byte("connectproxy.(*Server)")) || bytes.Contains(stacks, []byte("connectproxy.pipe")) {
		t.Errorf("server goroutines left after Close:\n%s", stacks)
	}
	for _, c := range append(conns, idle) {
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read on %v after Close = %d, %v; want the connection ended", c.LocalAddr(), n, err)
		}
	}
	if c, err := net.Dial("tcp", s.Addr()); err == nil {
		c.Close()
		t.Error("the proxy still accepts connections after Close")
	}
	goleak.VerifyNone(t)
}
