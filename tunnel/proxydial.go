package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// ErrProxyAuth means an HTTP proxy answered CONNECT with 407 Proxy
// Authentication Required: the proxy URL has no credentials, or the proxy
// refused them.
var ErrProxyAuth = errors.New("tunnel: proxy authentication failed")

// ProxyDialer dials TCP targets ("host:port") directly or through an HTTP
// CONNECT proxy, for the TLS-over-TCP transport.
//
// The proxy is either fixed, from the proxy_url setting, and then used for
// every target; or taken from the environment (HTTPS_PROXY, NO_PROXY and
// their lower-case forms, as read when the dialer was made) per target, the
// way net/http chooses a proxy for the URL https://<target>. Like net/http,
// the environment never sends localhost or loopback addresses through a
// proxy.
//
// A proxy URL is http://[user:password@]host[:port], or https:// for TLS to
// the proxy itself (verified against the system roots, with the proxy's
// host as the server name). Credentials go to the proxy as Basic
// Proxy-Authorization. Errors and String name the proxy with its password
// redacted.
//
// A ProxyDialer is safe for concurrent use.
type ProxyDialer struct {
	// proxy is the proxy to use; nil means always direct.
	proxy *url.URL
	// proxyFor, when set, decides per target URL whether the environment
	// sends it through proxy (a non-nil result) or direct (nil).
	proxyFor func(*url.URL) (*url.URL, error)
	// noProxy is the environment's NO_PROXY, for String.
	noProxy string
	// dial makes the TCP connections, to the proxy or the target.
	dial func(ctx context.Context, network, address string) (net.Conn, error)
	// proxyRoots verifies an https proxy's certificate; nil means the
	// system roots.
	proxyRoots *x509.CertPool
}

// NewProxyDialer returns a dialer that uses proxyURL, if it is not empty, for
// every target; else, if fromEnv, the proxy the environment names for each
// target; else none. An invalid proxy URL, from the argument or the
// environment, is an error that says what is wrong with it.
func NewProxyDialer(proxyURL string, fromEnv bool) (*ProxyDialer, error) {
	d := &ProxyDialer{dial: (&net.Dialer{}).DialContext}
	switch {
	case proxyURL != "":
		u, err := parseProxyURL(proxyURL)
		if err != nil {
			return nil, fmt.Errorf("tunnel: proxy_url: %w", err)
		}
		d.proxy = u
	case fromEnv:
		env := httpproxy.FromEnvironment()
		if env.HTTPSProxy == "" {
			break
		}
		// httpproxy quietly ignores a proxy it cannot parse, which would
		// mean dialing direct. Ask a config without NO_PROXY for any
		// non-loopback target to learn how it parses HTTPS_PROXY.
		u, _ := (&httpproxy.Config{HTTPSProxy: env.HTTPSProxy}).ProxyFunc()(&url.URL{Scheme: "https", Host: "relay.invalid:443"})
		if u == nil {
			// The value is not repeated: it may hold a password.
			return nil, errors.New("tunnel: HTTPS_PROXY in the environment is not a valid URL")
		}
		if err := checkProxyURL(u); err != nil {
			return nil, fmt.Errorf("tunnel: HTTPS_PROXY in the environment: %w", err)
		}
		d.proxy = u
		d.proxyFor = env.ProxyFunc()
		d.noProxy = env.NoProxy
	}
	return d, nil
}

// parseProxyURL parses and checks a configured proxy URL.
func parseProxyURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url.Error repeats the whole URL, password included; keep only
		// what is wrong with it.
		if uerr, ok := errors.AsType[*url.Error](err); ok {
			err = uerr.Err
		}
		return nil, fmt.Errorf("invalid URL: %w", err)
	}
	if err := checkProxyURL(u); err != nil {
		return nil, err
	}
	return u, nil
}

// checkProxyURL accepts http:// and https:// URLs with a host, an optional
// port and user info, and nothing else. Its errors show only the URL's
// scheme, user and host, the password redacted: in a malformed URL, such as
// http://http://user:password@proxy, a password can hide in the path.
func checkProxyURL(u *url.URL) error {
	var problem string
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		problem = fmt.Sprintf("unsupported scheme %q (want http or https)", u.Scheme)
	case u.Hostname() == "":
		problem = "missing host"
	case u.Path != "" && u.Path != "/":
		problem = "a proxy URL has no path"
	case u.RawQuery != "" || u.ForceQuery:
		problem = "a proxy URL has no query"
	case u.Fragment != "":
		problem = "a proxy URL has no fragment"
	case !validPort(u.Port()):
		problem = fmt.Sprintf("invalid port %q", u.Port())
	default:
		return nil
	}
	origin := url.URL{Scheme: u.Scheme, User: u.User, Host: u.Host}
	return fmt.Errorf("%s: %s", origin.Redacted(), problem)
}

// validPort accepts an empty port (the scheme's default) or 1 to 65535.
func validPort(p string) bool {
	if p == "" {
		return true
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// Proxy returns the proxy that DialContext would use for target ("host:port"),
// or nil when it would dial direct.
func (d *ProxyDialer) Proxy(target string) (*url.URL, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("tunnel: dial target: %w", err)
	}
	if d.proxy == nil {
		return nil, nil
	}
	if d.proxyFor != nil {
		p, err := d.proxyFor(&url.URL{Scheme: "https", Host: target})
		if err != nil {
			return nil, fmt.Errorf("tunnel: proxy for %s from the environment: %w", target, err)
		}
		if p == nil {
			return nil, nil
		}
	}
	u := *d.proxy
	return &u, nil
}

// String describes the dialer, for logs: "direct", or the proxy with its
// password redacted.
func (d *ProxyDialer) String() string {
	switch {
	case d.proxy == nil:
		return "direct"
	case d.proxyFor != nil:
		return fmt.Sprintf("proxy %s from HTTPS_PROXY (NO_PROXY=%q)", d.proxy.Redacted(), d.noProxy)
	default:
		return "proxy " + d.proxy.Redacted()
	}
}

// DialContext connects to address ("host:port") over network ("tcp", "tcp4"
// or "tcp6"), through the proxy if one applies. ctx bounds the whole dial,
// including the CONNECT exchange with the proxy; it should have a deadline,
// since a proxy may accept a connection and never answer. The connection
// returned has no deadline, and outlives ctx.
func (d *ProxyDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("tunnel: dial %s: unsupported network %q", address, network)
	}
	proxy, err := d.Proxy(address)
	if err != nil {
		return nil, err
	}
	if proxy == nil {
		return d.dial(ctx, network, address)
	}
	conn, err := d.dial(ctx, network, proxyAddr(proxy))
	if err != nil {
		return nil, connectError(proxy, address, fmt.Errorf("dial proxy: %w", err))
	}
	c, err := d.connect(ctx, conn, proxy, address)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// proxyAddr is the proxy's host and port, the scheme's default port if the
// URL has none.
func proxyAddr(proxy *url.URL) string {
	port := proxy.Port()
	if port == "" {
		port = "80"
		if proxy.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(proxy.Hostname(), port)
}

// connectError names the exchange that failed.
func connectError(proxy *url.URL, target string, err error) error {
	return fmt.Errorf("tunnel: CONNECT %s via proxy %s: %w", target, proxy.Redacted(), err)
}

// connect runs the CONNECT exchange on conn, a connection to proxy, within
// ctx, and returns the tunnel to target. The caller closes conn on error.
func (d *ProxyDialer) connect(ctx context.Context, conn net.Conn, proxy *url.URL, target string) (net.Conn, error) {
	// When ctx ends, by its deadline or a cancel, every blocked read and
	// write on conn fails at once. A conn deadline set from ctx's deadline
	// would race with it, and leave the I/O error in place of ctx's.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	c, err := d.exchange(conn, proxy, target)
	if !stop() {
		// ctx ended during the exchange: any I/O error was its symptom,
		// and a tunnel that did come up has a deadline in the past.
		return nil, connectError(proxy, target, context.Cause(ctx))
	}
	return c, err
}

// exchange does TLS to an https proxy, sends CONNECT and reads the answer.
func (d *ProxyDialer) exchange(conn net.Conn, proxy *url.URL, target string) (net.Conn, error) {
	if proxy.Scheme == "https" {
		tc := tls.Client(conn, &tls.Config{
			MinVersion: tls.VersionTLS12,
			ServerName: proxy.Hostname(),
			RootCAs:    d.proxyRoots,
		})
		if err := tc.Handshake(); err != nil {
			return nil, connectError(proxy, target, fmt.Errorf("TLS handshake with the proxy: %w", err))
		}
		conn = tc
	}

	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: target},
		Host:   target,
		Header: http.Header{},
	}
	if proxy.User != nil {
		pass, _ := proxy.User.Password()
		creds := proxy.User.Username() + ":" + pass
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(creds)))
	}
	if err := req.Write(conn); err != nil {
		return nil, connectError(proxy, target, fmt.Errorf("send request: %w", err))
	}

	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, connectError(proxy, target, fmt.Errorf("read response: %w", err))
	}
	switch {
	case resp.StatusCode == http.StatusProxyAuthRequired && proxy.User == nil:
		return nil, fmt.Errorf("%w: proxy %s needs credentials for CONNECT %s (%s); put user:password@ in the proxy URL",
			ErrProxyAuth, proxy.Redacted(), target, resp.Status)
	case resp.StatusCode == http.StatusProxyAuthRequired:
		return nil, fmt.Errorf("%w: proxy %s refused the credentials in the proxy URL for CONNECT %s (%s)",
			ErrProxyAuth, proxy.Redacted(), target, resp.Status)
	case resp.StatusCode/100 != 2:
		return nil, connectError(proxy, target, fmt.Errorf("proxy answered %s", resp.Status))
	}
	if br.Buffered() > 0 {
		// The target spoke first and its bytes came with the response.
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

// bufferedConn is a connection whose first bytes were read ahead into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

// Read returns the bytes read ahead first, then reads the connection.
func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}
