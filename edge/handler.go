package edge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/airlock-proxy/airlock/internal/apierror"

	"github.com/airlock-proxy/airlock/proto"

	"github.com/airlock-proxy/airlock/tunnel"
)

// apiPrefix is the URL space the edge serves, the clients' base URL path.
const apiPrefix = "/v1/"

// handler is the /v1 proxy that NewHandler returns.
type handler struct {
	opener tunnel.Opener
	logger *slog.Logger
	// access holds the settings a reload may change; each request reads
	// them once, at its start.
	access atomic.Pointer[access]
	// upgrades tracks hijacked connections so that shutdown can close them.
	upgrades upgradeTracker
	// sendTimeout is client_send_timeout, for HTTP/2 streams (see
	// exchange.copyResponse; HTTP/1 connections have it in clientConn).
	sendTimeout time.Duration
	metrics     *edgeMetrics
}

// NewHandler returns the edge's HTTP handler: it serves everything under /v1/
// for every method, checking the client's key (unless cfg.Auth is "none")
// and carrying each exchange as one stream opened with opener. Other paths
// get 404. CORS preflights are answered without a key.
//
// cfg is copied and completed with defaults; only its access settings (auth,
// clients, upstream, max_request_body_bytes) are used and validated here. A
// nil logger discards the access log. The request metrics are registered
// with reg; nil keeps them unregistered.
func NewHandler(cfg *Config, opener tunnel.Opener, logger *slog.Logger, reg prometheus.Registerer) (http.Handler, error) {
	c, err := populated(cfg, "edge handler", (*Config).validateAccess)
	if err != nil {
		return nil, err
	}
	return newHandler(c, opener, logger, reg)
}

// newHandler builds the handler of c, whose defaults are filled in and
// whose access settings are validated (by NewHandler, or by NewServer with
// the rest).
func newHandler(c *Config, opener tunnel.Opener, logger *slog.Logger, reg prometheus.Registerer) (*handler, error) {
	if opener == nil {
		return nil, errors.New("edge handler: nil opener")
	}
	a, err := newAccess(c, nil)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	h := &handler{opener: opener, logger: logger, metrics: newEdgeMetrics(reg), sendTimeout: c.ClientSendTimeout.Duration}
	h.access.Store(a)
	return h, nil
}

// access is what the edge checks of each request: client keys and their
// policy, the default upstream, the body limit. A reload swaps it whole.
type access struct {
	// keys is nil when auth = "none".
	keys *keyring
	// upstream is the edge's default upstream ("" = the relay's).
	upstream string
	// maxBody is the largest request body accepted.
	maxBody int64
	// bodyTimeout bounds each wait for the next bytes of a request body.
	bodyTimeout time.Duration
	// anonymous caps the exchanges in flight without a client key (auth =
	// "none"), all together.
	anonymous slots
	// counters are the in-flight counts behind every client's slots.
	counters counters
}

// newAccess builds the access settings of c, whose defaults are filled in
// and whose access settings are validated. prev is the access settings they
// replace (nil at start): exchanges in flight under prev still count against
// the caps.
func newAccess(c *Config, prev *access) (*access, error) {
	a := &access{
		upstream: c.Upstream, maxBody: c.MaxRequestBodyBytes, bodyTimeout: c.ClientBodyTimeout.Duration,
		counters: make(counters, len(c.Clients)+1),
	}
	var old counters
	if prev != nil {
		old = prev.counters
	}
	a.anonymous = slotsFor("", c.MaxConcurrent, old, a.counters)
	if c.Auth == AuthKeys {
		k, err := newKeyring(c.Clients, c.MaxConcurrent, old, a.counters)
		if err != nil {
			return nil, fmt.Errorf("edge handler: %w", err)
		}
		a.keys = k
	}
	return a, nil
}

// reload checks cfg's access settings as NewHandler does and, if they are
// valid, applies them (see setAccess).
func (h *handler) reload(cfg *Config) error {
	c, err := populated(cfg, "edge handler", (*Config).validateAccess)
	if err != nil {
		return err
	}
	return h.setAccess(c)
}

// setAccess applies the access settings of c, whose defaults are filled in
// and whose access settings are validated (by reload, or by Server.Reload
// with the rest), to the requests that start from now on.
func (h *handler) setAccess(c *Config) error {
	a, err := newAccess(c, h.access.Load())
	if err != nil {
		return err
	}
	h.access.Store(a)
	return nil
}

// ServeHTTP routes, authenticates and applies the client's policy, then hands
// the request to an exchange. Every request gets one access log line.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := &exchange{h: h, acc: h.access.Load(), w: w, r: r, rc: http.NewResponseController(w), start: time.Now(), id: newRequestID()}
	h.metrics.inFlight.Inc()
	defer h.metrics.inFlight.Dec()
	defer ex.end()
	if cc := clientConnOf(r); cc != nil {
		defer cc.watchNextHead()
		if cc.ambiguousLength() {
			// RFC 9112, section 6.3: answer, then close.
			w.Header().Set("Connection", "close")
		}
	}

	if !strings.HasPrefix(r.URL.Path, apiPrefix) {
		ex.fail(&apiError{
			status: http.StatusNotFound, typ: apierror.TypeInvalidRequest, code: codeNotFound,
			message: fmt.Sprintf("airlock edge: invalid URL (%s %s): the API is served under /v1/",
				r.Method, truncate(r.URL.Path, maxEchoed)),
		})
		return
	}
	if isPreflight(r) {
		ex.setEdgeHeaders(w.Header())
		writePreflight(w, r)
		ex.status = http.StatusNoContent
		return
	}
	if ex.acc.keys != nil {
		key := requestKey(r.Header)
		if key == "" {
			ex.fail(&apiError{
				status: http.StatusUnauthorized, typ: apierror.TypeInvalidRequest, code: codeInvalidAPIKey,
				message: "airlock edge: you didn't provide an API key: send your airlock client key " +
					"as \"Authorization: Bearer <key>\" or \"api-key: <key>\"",
			})
			return
		}
		if ex.client = ex.acc.keys.lookup(key); ex.client == nil {
			ex.fail(&apiError{
				status: http.StatusUnauthorized, typ: apierror.TypeInvalidRequest, code: codeInvalidAPIKey,
				message: "airlock edge: Incorrect API key provided: this edge knows no client with this key " +
					"(use the client key from airlock init or airlock keygen -client, not an upstream key)",
			})
			return
		}
	}
	requested := r.Header.Get(headerUpstream)
	if requested != "" && !proto.Printable(requested) {
		ex.fail(&apiError{
			status: http.StatusBadRequest, typ: apierror.TypeInvalidRequest, code: codeInvalidRequest,
			message: "airlock edge: the Airlock-Upstream header must be an upstream name (printable ASCII without spaces)",
		})
		return
	}
	upstream, ok := ex.client.pickUpstream(requested, ex.acc.upstream)
	if !ok {
		ex.fail(&apiError{
			status: http.StatusForbidden, typ: apierror.TypePermission, code: codeUpstreamNotAllowed,
			message: fmt.Sprintf("airlock edge: client %q may not use upstream %q", ex.client.name, truncate(requested, maxEchoed)),
		})
		return
	}
	ex.upstream = upstream
	inFlight := ex.acc.anonymous
	if ex.client != nil {
		inFlight = ex.client.inFlight
	}
	if !inFlight.acquire() {
		ex.fail(&apiError{
			status: http.StatusTooManyRequests, typ: apierror.TypeRateLimit, code: codeTooManyRequests,
			message: fmt.Sprintf("airlock edge: client %q has %d requests in flight, the most this edge allows (max_concurrent); "+
				"retry once one has finished", ex.clientLabel(), inFlight.max),
			retry: true,
		})
		return
	}
	defer inFlight.release()
	ex.run()
	if ex.status == statusClientClosed {
		// The client left before any answer (or half-closed its side,
		// which the server cannot tell apart): close the connection
		// rather than let the server send an empty 200 in the
		// handler's name.
		panic(http.ErrAbortHandler)
	}
}

// newRequestID returns 16 random hex digits. The client's X-Request-Id is
// forwarded untouched but not trusted to be unique, so airlock makes its own.
func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// closeUpgraded closes every hijacked (upgraded) connection, refuses new
// ones, and waits until their exchanges have ended or ctx is done.
func (h *handler) closeUpgraded(ctx context.Context) error {
	return h.upgrades.closeAndWait(ctx)
}

var _ http.Handler = (*handler)(nil)
