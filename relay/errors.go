package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/airlock-proxy/airlock/internal/apierror"

	"github.com/airlock-proxy/airlock/proto"
)

// apiError is an answer the relay gives itself, before any response head, as
// an OpenAI-shaped error: a normal response (HEAD, JSON body, END), so that
// SDKs show the message.
type apiError struct {
	status  int
	typ     string // OpenAI error type
	code    string // OpenAI error code
	message string // says what went wrong and names airlock
	result  string // for the exchange's log line
}

// writeAPIError writes e as a whole response: HEAD, one DATA, END.
func writeAPIError(w *proto.Writer, e *apiError) error {
	body := apierror.Body(e.typ, e.code, "", e.message)
	head := &proto.ResponseHead{
		Status: e.status,
		Header: http.Header{
			"Content-Type":           {"application/json"},
			"Cache-Control":          {"no-store"},
			"X-Content-Type-Options": {"nosniff"},
		},
		ContentLength: int64(len(body)),
	}
	if err := w.WriteResponseHead(head); err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	return w.End(nil)
}

func errBadPath(err error) *apiError {
	return &apiError{
		status:  http.StatusBadRequest,
		typ:     apierror.TypeInvalidRequest,
		code:    "invalid_path",
		message: "airlock relay: invalid request path: " + err.Error(),
		result:  "bad_path",
	}
}

func errBadUpgrade() *apiError {
	return &apiError{
		status:  http.StatusBadRequest,
		typ:     apierror.TypeInvalidRequest,
		code:    "invalid_upgrade",
		message: "airlock relay: the Upgrade header is not printable ASCII",
		result:  "bad_upgrade",
	}
}

func errMethodNotAllowed(method string) *apiError {
	return &apiError{
		status:  http.StatusMethodNotAllowed,
		typ:     apierror.TypeInvalidRequest,
		code:    "method_not_allowed",
		message: "airlock relay: method " + method + " is not forwarded",
		result:  "bad_method",
	}
}

// errUpstreamNotAllowed is the one answer to an upstream name the edge may
// not use, whether the relay does not know it (result "unknown_upstream")
// or knows it but the edge may not use it ("forbidden_upstream"). The two
// must give the client exactly the same answer (issue 8, section 5): if
// they differed, in status, type, code or message, a client could list the
// relay's upstream names by trying them. The message therefore names
// neither the upstream (the client knows what it asked for) nor the edge;
// only result, in the log line, tells the two apart for the operator.
func errUpstreamNotAllowed(result string) *apiError {
	return &apiError{
		status:  http.StatusForbidden,
		typ:     apierror.TypePermission,
		code:    "upstream_not_allowed",
		message: "airlock relay: the upstream named in Airlock-Upstream does not exist or this edge may not use it",
		result:  result,
	}
}

func errUnknownEdge() *apiError {
	return &apiError{
		status:  http.StatusForbidden,
		typ:     apierror.TypePermission,
		code:    "edge_not_allowed",
		message: "airlock relay: this edge is not in the relay's configuration",
		result:  "unknown_edge",
	}
}

// errUpstreamFailed maps a failed round trip, before any response head, to
// 504 (a timeout) or 502 (anything else). The message names the upstream and
// never contains its URL (which may hold a query) or its key.
func errUpstreamFailed(name string, err error) *apiError {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &apiError{
			status:  http.StatusGatewayTimeout,
			typ:     apierror.TypeServer,
			code:    "upstream_timeout",
			message: fmt.Sprintf("airlock relay: upstream %q did not answer in time", name),
			result:  "upstream_timeout",
		}
	}
	what := "failed before answering"
	var op *net.OpError
	var tlsErr tls.RecordHeaderError
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &op) && op.Op == "dial":
		what = "is unreachable"
	case errors.As(err, &certErr):
		what = "presented a certificate that does not verify"
	case errors.As(err, &tlsErr):
		what = "does not speak TLS"
	}
	return &apiError{
		status:  http.StatusBadGateway,
		typ:     apierror.TypeServer,
		code:    "upstream_error",
		message: fmt.Sprintf("airlock relay: upstream %q %s", name, what),
		result:  "upstream_error",
	}
}

func errUpstreamBadSwitch(name string) *apiError {
	return &apiError{
		status:  http.StatusBadGateway,
		typ:     apierror.TypeServer,
		code:    "upstream_error",
		message: fmt.Sprintf("airlock relay: upstream %q switched to a protocol the client did not ask for", name),
		result:  "upstream_error",
	}
}

// errDetail returns err for logs without the request URL that a *url.Error
// carries (its query could hold anything the client put there).
func errDetail(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}
