package edge

import (
	"net/http"
	"strconv"

	"github.com/airlock-proxy/airlock/internal/apierror"
)

// The OpenAI error codes the edge uses (types are in package apierror). SDKs branch on the
// status and show the message, so each message says what went wrong and that
// airlock (not the upstream) said it.
const (
	codeInvalidAPIKey      = "invalid_api_key"
	codeNotFound           = "not_found"
	codeRequestTooLarge    = "request_too_large"
	codeHeadersTooLarge    = "request_header_fields_too_large"
	codeInvalidRequest     = "invalid_request"
	codeUpstreamNotAllowed = "upstream_not_allowed"
	codeUpstreamError      = "upstream_error"
	codeTunnelUnavailable  = "tunnel_unavailable"
	codeUpstreamTimeout    = "upstream_timeout"
	codeRequestTimeout     = "request_timeout"
	codeTooManyRequests    = "rate_limit_exceeded"
	codeTooManyConnections = "too_many_connections"
)

const (
	// statusClientClosed is nginx's "client closed request", for logs only:
	// nothing is sent to a client that went away.
	statusClientClosed = 499
	// retryAfterSeconds is the Retry-After of 503 answers.
	retryAfterSeconds = 1
	// maxEchoed bounds what of a path or a relay's message is echoed in an
	// error message.
	maxEchoed = 200
)

// apiError is an error answered to the client before any response head, as
// OpenAI's error JSON.
type apiError struct {
	status  int
	typ     string
	code    string
	message string
	// retry adds "Retry-After: 1": the condition is expected to pass soon
	// (no tunnel yet, the relay is draining).
	retry bool
}

// write sends the error as the whole response and returns the body bytes
// written. Headers already set on w (request id, CORS) are kept.
func (e *apiError) write(w http.ResponseWriter) int {
	body := apierror.Body(e.typ, e.code, "", e.message)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	if e.retry {
		h.Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	w.WriteHeader(e.status)
	n, _ := w.Write(body)
	return n
}

// truncate shortens s to at most n bytes for echoing in a message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
