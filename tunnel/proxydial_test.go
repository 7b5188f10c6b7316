package tunnel

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/internal/testkit/connectproxy"
)

// proxyIOTimeout bounds dials and reads in the proxy tests, so that a broken
// dialer fails a test instead of hanging it.
const proxyIOTimeout = 5 * time.Second

// The credentials of the test proxies. The passwords are distinctive so
// that a test can tell one leaking into a message.
const (
	proxyUser      = "alice"
	proxyPassword  = "hunter2-right"
	proxyWrongPass = "hunter2-wrong"
)

// targetGreeting is what a greeter target writes as soon as it accepts.
const targetGreeting = "hello from the target\n"

// serveConns accepts connections on loopback and runs handle on each in its
// own goroutine, closing the connection when handle returns. When the test
// ends it closes the listener and the connections and waits for the
// goroutines.
func serveConns(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// startGreeter starts a target that writes targetGreeting at once, then
// echoes.
func startGreeter(t *testing.T) string {
	return serveConns(t, func(c net.Conn) {
		if _, err := io.WriteString(c, targetGreeting); err == nil {
			io.Copy(c, c)
		}
	})
}

// startScriptedProxy starts a fake proxy that reads one request per
// connection and sends it to the returned channel; then it writes response
// in one piece and echoes, or, if response is empty, hangs up.
func startScriptedProxy(t *testing.T, response string) (string, <-chan *http.Request) {
	reqs := make(chan *http.Request, 1)
	addr := serveConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		select {
		case reqs <- req:
		default:
		}
		if response == "" {
			return
		}
		if _, err := io.WriteString(c, response); err == nil {
			io.Copy(c, br)
		}
	})
	return addr, reqs
}

// proxyRequest returns the request a scripted proxy got, once the dial
// through it has returned.
func proxyRequest(t *testing.T, reqs <-chan *http.Request) *http.Request {
	t.Helper()
	select {
	case req := <-reqs:
		return req
	default:
		// The proxy sends the request on before it answers.
		t.Fatal("the proxy got no request")
		return nil
	}
}

// startStalledProxy starts a fake proxy that reads what its clients send
// and never answers. It announces on the returned channel each connection
// whose first byte, of a CONNECT or a TLS ClientHello, it has read: the
// dialer is then past the dial, in the exchange.
func startStalledProxy(t *testing.T) (string, <-chan struct{}) {
	heard := make(chan struct{}, 1)
	addr := serveConns(t, func(c net.Conn) {
		if _, err := c.Read(make([]byte, 1)); err != nil {
			return
		}
		select {
		case heard <- struct{}{}:
		default:
		}
		io.Copy(io.Discard, c)
	})
	return addr, heard
}

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func mustProxyDialer(t *testing.T, proxyURL string, fromEnv bool) *ProxyDialer {
	t.Helper()
	d, err := NewProxyDialer(proxyURL, fromEnv)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// proxyDialContext is a context for one dial, ending with the test.
func proxyDialContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), proxyIOTimeout)
	t.Cleanup(cancel)
	return ctx
}

// withUser returns rawURL with user info user:pass.
func withUser(t *testing.T, rawURL, user, pass string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, pass)
	return u.String()
}

// checkGreeting reads the greeter's greeting from c, then checks that c
// echoes.
func checkGreeting(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(proxyIOTimeout))
	buf := make([]byte, len(targetGreeting)+4)
	if _, err := io.ReadFull(c, buf[:len(targetGreeting)]); err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	if got := string(buf[:len(targetGreeting)]); got != targetGreeting {
		t.Fatalf("greeting = %q, want %q", got, targetGreeting)
	}
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf[:4]); err != nil || string(buf[:4]) != "ping" {
		t.Fatalf("echo = %q, %v; want ping", buf[:4], err)
	}
}

// checkProxyError checks that err names the proxy (with its password
// redacted) and the target, contains every string in want, and leaks no
// password.
func checkProxyError(t *testing.T, err error, proxyURL, target string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("dial succeeded, want an error")
	}
	u, perr := url.Parse(proxyURL)
	if perr != nil {
		t.Fatal(perr)
	}
	msg := err.Error()
	for _, s := range append([]string{u.Redacted(), target}, want...) {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not contain %q", msg, s)
		}
	}
	for _, pass := range []string{proxyPassword, proxyWrongPass} {
		if strings.Contains(msg, pass) {
			t.Errorf("error %q contains a password", msg)
		}
	}
}

// TestProxyDialThroughConnectProxy dials a greeter through a real CONNECT
// proxy, over http and https, with good, wrong and missing credentials.
func TestProxyDialThroughConnectProxy(t *testing.T) {
	greeter := startGreeter(t)
	tests := []struct {
		name      string
		opts      connectproxy.Options
		pass      string // the password in the proxy URL; "" for no user info
		untrusted bool   // do not trust the https proxy's certificate
		target    string // default greeter
		wantErr   []string
		wantAuth  bool // the error is ErrProxyAuth
	}{
		{name: "http", pass: proxyPassword},
		{name: "https", opts: connectproxy.Options{TLS: true}, pass: proxyPassword},
		{name: "wrong password", pass: proxyWrongPass, wantErr: []string{"407", "refused the credentials"}, wantAuth: true},
		{name: "no credentials", wantErr: []string{"407", "needs credentials"}, wantAuth: true},
		{name: "target down", pass: proxyPassword, target: closedPort(t), wantErr: []string{"502 Bad Gateway"}},
		{name: "port not allowed", opts: connectproxy.Options{AllowPorts: []int{443}}, pass: proxyPassword, wantErr: []string{"403 Forbidden"}},
		{name: "https proxy not trusted", opts: connectproxy.Options{TLS: true}, pass: proxyPassword, untrusted: true,
			wantErr: []string{"TLS handshake with the proxy", "certificate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Username, opts.Password = proxyUser, proxyPassword
			proxy, err := connectproxy.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			proxyURL := proxy.URL(false)
			if tt.pass != "" {
				proxyURL = withUser(t, proxyURL, proxyUser, tt.pass)
			}
			target := tt.target
			if target == "" {
				target = greeter
			}
			d := mustProxyDialer(t, proxyURL, false)
			if !tt.untrusted {
				d.proxyRoots = proxy.CertPool()
			}

			c, err := d.DialContext(proxyDialContext(t), "tcp", target)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				checkGreeting(t, c)
				if proxy.Tunnels() != 1 {
					t.Errorf("proxy Tunnels = %d, want 1", proxy.Tunnels())
				}
				return
			}
			checkProxyError(t, err, proxyURL, target, tt.wantErr...)
			if got := errors.Is(err, ErrProxyAuth); got != tt.wantAuth {
				t.Errorf("errors.Is(err, ErrProxyAuth) = %v, want %v", got, tt.wantAuth)
			}
		})
	}
}

// TestProxyDialTLSTarget runs HTTPS through the tunnel to a TLS server, as
// the TCP transport does.
func TestProxyDialTLSTarget(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "through")
	}))
	defer srv.Close()
	proxy, err := connectproxy.New(connectproxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()

	client := srv.Client()
	tr := client.Transport.(*http.Transport)
	defer tr.CloseIdleConnections()
	tr.DialContext = mustProxyDialer(t, proxy.URL(false), false).DialContext
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "through" {
		t.Fatalf("body = %q, %v", body, err)
	}
	if proxy.Tunnels() != 1 {
		t.Errorf("proxy Tunnels = %d, want 1", proxy.Tunnels())
	}
}

// TestProxyDialScripted checks the CONNECT request and how the dialer reads
// answers that a real proxy rarely gives.
func TestProxyDialScripted(t *testing.T) {
	const target = "relay.example:443"
	tests := []struct {
		name     string
		response string
		pass     string // "" for no user info
		wantErr  []string
		wantAuth bool
	}{
		// On success the target's greeting comes in one piece with the
		// response head, as if the target spoke first.
		{name: "200", response: "HTTP/1.1 200 Connection established\r\n\r\n" + targetGreeting, pass: proxyPassword},
		{name: "HTTP/1.0 and another 2xx", response: "HTTP/1.0 201 Created\r\nX-Proxy: yes\r\n\r\n" + targetGreeting},
		{name: "407 with credentials", response: "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", pass: proxyWrongPass,
			wantErr: []string{"407 Proxy Authentication Required", "refused the credentials"}, wantAuth: true},
		{name: "407 without credentials", response: "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
			wantErr: []string{"407 Proxy Authentication Required", "needs credentials"}, wantAuth: true},
		{name: "502", response: "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", pass: proxyPassword,
			wantErr: []string{"proxy answered 502 Bad Gateway"}},
		{name: "malformed", response: "SSH-2.0-OpenSSH_9.6\r\n\r\n", wantErr: []string{"read response", "malformed HTTP"}},
		{name: "hangs up", response: "", wantErr: []string{"read response", "EOF"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, reqs := startScriptedProxy(t, tt.response)
			proxyURL := "http://" + addr
			if tt.pass != "" {
				proxyURL = withUser(t, proxyURL, proxyUser, tt.pass)
			}
			d := mustProxyDialer(t, proxyURL, false)
			c, err := d.DialContext(proxyDialContext(t), "tcp", target)

			req := proxyRequest(t, reqs)
			if req.Method != http.MethodConnect || req.RequestURI != target || req.Host != target {
				t.Errorf("request = %s %s, Host %s; want CONNECT %s, Host %s", req.Method, req.RequestURI, req.Host, target, target)
			}
			wantAuthz := ""
			if tt.pass != "" {
				wantAuthz = "Basic " + base64.StdEncoding.EncodeToString([]byte(proxyUser+":"+tt.pass))
			}
			if got := req.Header.Get("Proxy-Authorization"); got != wantAuthz {
				t.Errorf("Proxy-Authorization = %q, want %q", got, wantAuthz)
			}

			if tt.wantErr != nil {
				checkProxyError(t, err, proxyURL, target, tt.wantErr...)
				if got := errors.Is(err, ErrProxyAuth); got != tt.wantAuth {
					t.Errorf("errors.Is(err, ErrProxyAuth) = %v, want %v", got, tt.wantAuth)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			checkGreeting(t, c)
		})
	}
}

// TestProxyDialOutlivesContext checks that a tunnel made under a context
// with a deadline outlives the deadline.
func TestProxyDialOutlivesContext(t *testing.T) {
	addr, _ := startScriptedProxy(t, "HTTP/1.1 200 Connection established\r\n\r\n")
	d := mustProxyDialer(t, "http://"+addr, false)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", "relay.example:443")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-ctx.Done()
	if _, err := io.WriteString(c, "late"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "late" {
		t.Errorf("read after the dial's deadline = %q, %v; want late", got, err)
	}
}

func TestProxyDialUnreachable(t *testing.T) {
	proxyURL := "http://" + proxyUser + ":" + proxyPassword + "@" + closedPort(t)
	d := mustProxyDialer(t, proxyURL, false)
	_, err := d.DialContext(proxyDialContext(t), "tcp", "relay.example:443")
	checkProxyError(t, err, proxyURL, "relay.example:443", "dial proxy", "connection refused")
}

// TestProxyDialStalled checks that a proxy that accepts and never answers
// holds the dial no longer than its context: to the context's deadline, or
// until a context with no deadline is cancelled. The proxy stalls the
// CONNECT exchange, or the TLS handshake of an https proxy.
func TestProxyDialStalled(t *testing.T) {
	tests := []struct {
		scheme string
		cancel bool // cancel, instead of a deadline
		want   error
	}{
		{"http", false, context.DeadlineExceeded},
		{"https", false, context.DeadlineExceeded},
		{"http", true, context.Canceled},
		{"https", true, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.scheme+"/"+tt.want.Error(), func(t *testing.T) {
			addr, heard := startStalledProxy(t)
			proxyURL := tt.scheme + "://" + addr
			d := mustProxyDialer(t, proxyURL, false)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if !tt.cancel {
				var stop context.CancelFunc
				ctx, stop = context.WithTimeout(ctx, 300*time.Millisecond)
				defer stop()
			}
			errc := make(chan error, 1)
			go func() {
				c, err := d.DialContext(ctx, "tcp", "relay.example:443")
				if err == nil {
					c.Close()
				}
				errc <- err
			}()
			if tt.cancel {
				select {
				case <-heard:
				case <-time.After(proxyIOTimeout):
					t.Fatal("the dialer never spoke to the proxy")
				}
				cancel()
			}
			select {
			case err := <-errc:
				checkProxyError(t, err, proxyURL, "relay.example:443")
				if !errors.Is(err, tt.want) {
					t.Errorf("error %q is not %v", err, tt.want)
				}
			case <-time.After(proxyIOTimeout):
				// The stalled proxy's cleanup closes the connection,
				// which ends the dial.
				t.Fatal("the dial outlived its context")
			}
		})
	}
}

// setProxyEnv sets the proxy environment in both cases of names.
func setProxyEnv(t *testing.T, httpsProxy, noProxy string) {
	for _, name := range []string{"https_proxy", "HTTPS_PROXY"} {
		t.Setenv(name, httpsProxy)
	}
	for _, name := range []string{"no_proxy", "NO_PROXY"} {
		t.Setenv(name, noProxy)
	}
}

func TestProxyDialDirect(t *testing.T) {
	greeter := startGreeter(t)
	unusable := "http://" + proxyUser + ":" + proxyPassword + "@" + closedPort(t)
	tests := []struct {
		name     string
		envProxy string
		fromEnv  bool
	}{
		{"no proxy configured, environment ignored", unusable, false},
		{"no proxy in the environment", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setProxyEnv(t, tt.envProxy, "")
			d := mustProxyDialer(t, "", tt.fromEnv)
			if got := d.String(); got != "direct" {
				t.Errorf("String = %q, want direct", got)
			}
			for _, target := range []string{greeter, "relay.example:443"} {
				if p, err := d.Proxy(target); p != nil || err != nil {
					t.Errorf("Proxy(%s) = %v, %v; want nil, nil", target, p, err)
				}
			}
			c, err := d.DialContext(proxyDialContext(t), "tcp", greeter)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			checkGreeting(t, c)
		})
	}
}

// TestProxyDialFromEnv checks that HTTPS_PROXY and NO_PROXY choose, per
// target, between the proxy and a direct dial.
func TestProxyDialFromEnv(t *testing.T) {
	greeter := startGreeter(t)
	tests := []struct {
		noProxy string
		target  string
		proxied bool
	}{
		{"", "relay.example:443", true},
		{"other.org,*.corp", "relay.example:443", true},
		{"relay.example:8443", "relay.example:443", true},
		{"relay.example", "relay.example:443", false},
		{".example", "relay.example:443", false},
		{"other.org, example", "relay.example:443", false},
		{"*", "relay.example:443", false},
		{"203.0.113.0/24", "203.0.113.7:443", false},
		{"", "localhost:443", false},
		{"", "127.0.0.1:443", false},
	}
	for _, tt := range tests {
		t.Run(tt.noProxy+"/"+tt.target, func(t *testing.T) {
			addr, reqs := startScriptedProxy(t, "HTTP/1.1 200 Connection established\r\n\r\n"+targetGreeting)
			// Without a scheme, as people often write it.
			envProxy := proxyUser + ":" + proxyPassword + "@" + addr
			setProxyEnv(t, envProxy, tt.noProxy)
			d := mustProxyDialer(t, "", true)
			if s := d.String(); !strings.Contains(s, "http://"+proxyUser+":xxxxx@"+addr) || !strings.Contains(s, strconv.Quote(tt.noProxy)) {
				t.Errorf("String = %q, want the redacted proxy and NO_PROXY", s)
			}

			p, err := d.Proxy(tt.target)
			if err != nil {
				t.Fatal(err)
			}
			if got := p != nil; got != tt.proxied {
				t.Fatalf("Proxy(%s) = %v, want proxied %v", tt.target, p, tt.proxied)
			}
			if tt.proxied && p.String() != "http://"+envProxy {
				t.Errorf("Proxy(%s) = %s, want http://%s", tt.target, p, envProxy)
			}

			// Targets are names no resolver knows: the dial goes to the
			// proxy, or, direct, to the greeter in their place.
			var dialed []string
			d.dial = func(ctx context.Context, network, address string) (net.Conn, error) {
				dialed = append(dialed, address)
				if address != addr {
					address = greeter
				}
				return (&net.Dialer{}).DialContext(ctx, network, address)
			}
			c, err := d.DialContext(proxyDialContext(t), "tcp", tt.target)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			checkGreeting(t, c)
			wantDialed := tt.target
			if tt.proxied {
				wantDialed = addr
				if req := proxyRequest(t, reqs); req.RequestURI != tt.target {
					t.Errorf("the proxy got CONNECT %s, want %s", req.RequestURI, tt.target)
				}
			}
			if len(dialed) != 1 || dialed[0] != wantDialed {
				t.Errorf("dialed %q, want [%s]", dialed, wantDialed)
			}
		})
	}
}

func TestNewProxyDialerErrors(t *testing.T) {
	tests := []struct {
		proxyURL string
		envProxy string // HTTPS_PROXY, with fromEnv
		want     string
	}{
		{proxyURL: "socks5://proxy:1080", want: `unsupported scheme "socks5"`},
		{proxyURL: "ftp://proxy:21", want: `unsupported scheme "ftp"`},
		{proxyURL: "proxy.corp:3128", want: `unsupported scheme "proxy.corp"`},
		{proxyURL: "//proxy:3128", want: `unsupported scheme ""`},
		{proxyURL: "alice:hunter2-right@proxy:3128", want: `unsupported scheme "alice"`},
		{proxyURL: "http://http://alice:hunter2-right@proxy:3128", want: "has no path"},
		{proxyURL: "http:/alice:hunter2-right@proxy:3128", want: "missing host"},
		{proxyURL: "http://", want: "missing host"},
		{proxyURL: "http://alice:hunter2-right@", want: "missing host"},
		{proxyURL: "http://:3128", want: "missing host"},
		{proxyURL: "http://alice:hunter2-right@proxy:3128/squid", want: "has no path"},
		{proxyURL: "http://proxy:3128?x=1", want: "has no query"},
		{proxyURL: "http://proxy:3128#x", want: "has no fragment"},
		{proxyURL: "http://proxy:0", want: `invalid port "0"`},
		{proxyURL: "http://proxy:65536", want: `invalid port "65536"`},
		{proxyURL: "http://alice:hunter2-right@pro xy:3128", want: "invalid character"},
		{proxyURL: "http://alice:hunter2-right@proxy:31x8", want: "invalid URL"},
		{envProxy: "socks5://alice:hunter2-right@proxy:1080", want: `HTTPS_PROXY in the environment: socks5://alice:xxxxx@proxy:1080: unsupported scheme`},
		{envProxy: "https://proxy:3128/path", want: "HTTPS_PROXY in the environment: https://proxy:3128: a proxy URL has no path"},
		{envProxy: "http://alice:hunter2-right@pro xy:3128", want: "HTTPS_PROXY in the environment: http://http:: a proxy URL has no path"},
		{envProxy: "http://alice:hunter2-right@proxy:3128\n", want: "HTTPS_PROXY in the environment is not a valid URL"},
	}
	for _, tt := range tests {
		t.Run(tt.proxyURL+tt.envProxy, func(t *testing.T) {
			setProxyEnv(t, tt.envProxy, "")
			d, err := NewProxyDialer(tt.proxyURL, tt.envProxy != "")
			if err == nil {
				t.Fatalf("NewProxyDialer = %v, want an error", d)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if tt.proxyURL != "" && !strings.Contains(err.Error(), "proxy_url") {
				t.Errorf("error %q does not name proxy_url", err)
			}
			if strings.Contains(err.Error(), proxyPassword) {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

func TestProxyDialerBadArguments(t *testing.T) {
	d := mustProxyDialer(t, "http://alice:"+proxyPassword+"@proxy.corp:3128", false)
	if got, want := d.String(), "proxy http://alice:xxxxx@proxy.corp:3128"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	tests := []struct {
		network, address, want string
	}{
		{"udp", "relay.example:443", `unsupported network "udp"`},
		{"tcp", "relay.example", "missing port"},
	}
	for _, tt := range tests {
		t.Run(tt.network+" "+tt.address, func(t *testing.T) {
			// The dial fails before any connection: proxy.corp is never
			// looked up.
			_, err := d.DialContext(proxyDialContext(t), tt.network, tt.address)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
