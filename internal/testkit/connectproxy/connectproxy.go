// Package connectproxy is an HTTP CONNECT proxy on loopback, for tests: the
// kind of corporate proxy an edge must go out through. It serves only
// CONNECT (other methods get 405), optionally over TLS, demands Basic
// credentials and limits the target ports if told to, and pipes each tunnel
// both ways, passing half-closes on.
package connectproxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// realm is the realm of the Proxy-Authenticate challenge.
const realm = "connectproxy"

// dialTimeout bounds the dial to a target; a failed dial gets 502 Bad
// Gateway.
const dialTimeout = 5 * time.Second

// Options configures a Server. The zero value is an open proxy to any port.
type Options struct {
	// Username and Password, when either is set, are the Basic
	// credentials a CONNECT must carry in Proxy-Authorization; a CONNECT
	// without them gets 407 Proxy Authentication Required.
	Username, Password string
	// AllowPorts, when not empty, lists the only target ports allowed;
	// CONNECT to another port gets 403 Forbidden.
	AllowPorts []int
	// TLS makes the proxy speak TLS to its clients (an https:// proxy),
	// with a fresh self-signed certificate for 127.0.0.1 that CertPool
	// trusts.
	TLS bool
}

// Server is a running proxy on 127.0.0.1. Close stops it.
type Server struct {
	opts     Options
	ln       net.Listener
	roots    *x509.CertPool  // trusts the TLS certificate; nil without TLS
	ctx      context.Context // ends at Close; bounds target dials
	cancel   context.CancelFunc
	tunnels  atomic.Int64
	refused  atomic.Int64
	wg       sync.WaitGroup // the accept loop and every connection's goroutines
	mu       sync.Mutex
	conns    map[net.Conn]struct{} // open client and target connections
	closed   bool
	closeErr error
}

// New starts a proxy on 127.0.0.1 at a free port.
func New(opts Options) (*Server, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("connectproxy: listen: %w", err)
	}
	var roots *x509.CertPool
	if opts.TLS {
		cert, err := selfSigned()
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("connectproxy: TLS certificate: %w", err)
		}
		roots = x509.NewCertPool()
		roots.AddCert(cert.Leaf)
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{opts: opts, ln: ln, roots: roots, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	s.wg.Go(s.serve)
	return s, nil
}

// Addr is the proxy's address, "127.0.0.1:port".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the proxy's URL, http://127.0.0.1:port (https:// with TLS),
// with the credentials from Options as user info if withCredentials.
func (s *Server) URL(withCredentials bool) string {
	u := url.URL{Scheme: "http", Host: s.Addr()}
	if s.opts.TLS {
		u.Scheme = "https"
	}
	if withCredentials {
		u.User = url.UserPassword(s.opts.Username, s.opts.Password)
	}
	return u.String()
}

// CertPool trusts the proxy's TLS certificate; it is nil without
// Options.TLS.
func (s *Server) CertPool() *x509.CertPool { return s.roots }

// Tunnels counts the CONNECT requests answered with 200.
func (s *Server) Tunnels() int64 { return s.tunnels.Load() }

// Refused counts the CONNECT requests answered with 407.
func (s *Server) Refused() int64 { return s.refused.Load() }

// Close stops accepting, ends every tunnel and waits until all of the
// server's goroutines have returned. It returns the listener's close error;
// later calls return the same.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.closeErr = s.ln.Close()
		s.cancel()
		for c := range s.conns {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return s.closeErr
}

// track adds c to the connections Close ends, or closes c and reports false
// if the server is closed.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// release closes c and forgets it.
func (s *Server) release(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// serve accepts connections until the listener is closed.
func (s *Server) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if !s.track(c) {
			return
		}
		s.wg.Go(func() {
			defer s.release(c)
			s.handle(c)
		})
	}
}

// handle serves one client connection: one request, then the tunnel if the
// request is granted.
func (s *Server) handle(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		reply(c, http.StatusBadRequest, "")
		return
	}
	if req.Method != http.MethodConnect {
		reply(c, http.StatusMethodNotAllowed, "Allow: CONNECT\r\n")
		return
	}
	if !s.authorized(req.Header.Get("Proxy-Authorization")) {
		s.refused.Add(1)
		reply(c, http.StatusProxyAuthRequired, fmt.Sprintf("Proxy-Authenticate: Basic realm=%q\r\n", realm))
		return
	}
	target := req.URL.Host
	_, portStr, err := net.SplitHostPort(target)
	if err != nil {
		reply(c, http.StatusBadRequest, "")
		return
	}
	if port, err := strconv.Atoi(portStr); err != nil || (len(s.opts.AllowPorts) > 0 && !slices.Contains(s.opts.AllowPorts, port)) {
		reply(c, http.StatusForbidden, "")
		return
	}

	ctx, cancel := context.WithTimeout(s.ctx, dialTimeout)
	t, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		reply(c, http.StatusBadGateway, "")
		return
	}
	if !s.track(t) {
		return
	}
	defer s.release(t)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	s.tunnels.Add(1)

	// Bytes the client sent after the request head are in br. Both
	// directions run to their end before the connections are closed.
	up := make(chan struct{})
	s.wg.Go(func() {
		defer close(up)
		pipe(t, br, c)
	})
	pipe(c, t, t)
	<-up
}

// authorized checks a Proxy-Authorization value against the configured
// credentials, if any.
func (s *Server) authorized(header string) bool {
	if s.opts.Username == "" && s.opts.Password == "" {
		return true
	}
	scheme, encoded, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	got, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return false
	}
	want := s.opts.Username + ":" + s.opts.Password
	return subtle.ConstantTimeCompare(got, []byte(want)) == 1
}

// pipe copies src, which reads from srcConn, to dst. At src's end it
// half-closes dst, so that side sees the end too; if either side fails, it
// closes both, which ends the other direction as well.
func pipe(dst net.Conn, src io.Reader, srcConn net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		srcConn.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// reply writes a response with no body and the given extra header lines.
func reply(c net.Conn, code int, header string) {
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n", code, http.StatusText(code), header)
}

// selfSigned makes a certificate for 127.0.0.1 that is its own root.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "connectproxy"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
