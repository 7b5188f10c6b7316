package edge

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// OpenAI error types and the codes airlock uses with them. SDKs branch on the
// status and show the message, so each message says what went wrong and that
// airlock (not the upstream) said it.
const (
	typeInvalidRequest = "invalid_request_error"
	typePermission     = "permission_error"
	typeServer         = "server_error"

	codeInvalidAPIKey      = "invalid_api_key"
	codeNotFound           = "not_found"
	codeRequestTooLarge    = "request_too_large"
	codeHeadersTooLarge    = "request_header_fields_too_large"
	codeInvalidRequest     = "invalid_request"
	codeUpstreamNotAllowed = "upstream_not_allowed"
	codeUpstreamError      = "upstream_error"
	codeTunnelUnavailable  = "tunnel_unavailable"
	codeUpstreamTimeout    = "upstream_timeout"
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

// errorBody is OpenAI's error shape:
// {"error":{"message":"...","type":"...","param":null,"code":"..."}}.
type errorBody struct {
	Error errorFields `json:"error"`
}

type errorFields struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// marshal returns the JSON body, ending in a newline.
func (e *apiError) marshal() []byte {
	b, err := json.Marshal(errorBody{Error: errorFields{Message: e.message, Type: e.typ, Code: e.code}})
	if err != nil {
		// Only strings are encoded, which cannot fail.
		panic("edge: encoding error JSON: " + err.Error())
	}
	return append(b, '\n')
}

// write sends the error as the whole response. Headers already set on w
// (request id, CORS) are kept.
func (e *apiError) write(w http.ResponseWriter) {
	body := e.marshal()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	if e.retry {
		h.Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	w.WriteHeader(e.status)
	w.Write(body)
}

// truncate shortens s to at most n bytes for echoing in a message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
