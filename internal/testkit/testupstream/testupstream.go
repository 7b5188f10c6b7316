// Package testupstream is a small, deterministic, OpenAI-compatible HTTP API
// that airlock uses as its upstream in `airlock dev`, in the end-to-end tests
// and in the benchmark.
//
// It answers the endpoints real clients call (models, chat completions with
// and without streaming, legacy completions, embeddings, audio
// transcriptions, files) in the official response shapes, so the official
// SDKs can talk to it through airlock unchanged. Replies are built from the
// request alone, so tests can predict every byte; streams are paced by a
// configurable interval and flushed event by event, so latency added by the
// proxy is measurable.
//
// Under /v1/airlock-test/ it also serves helpers that exist only for tests and
// the benchmark: bulk upload and download, a header echo, a stamped SSE
// stream and a request that holds until cancelled. Every request is reported
// on [Server.Requests], including when its context ended, so a test can prove
// that a client's disconnect reached the upstream.
//
// Endpoints (anything else is a 404, a wrong method a 405, both as OpenAI
// error JSON):
//
//	GET  /v1/models, /v1/models/{id}
//	POST /v1/chat/completions, /v1/completions   JSON or SSE ("stream": true)
//	POST /v1/embeddings                           "float" or "base64"
//	POST /v1/audio/transcriptions                 multipart; json, verbose_json or text
//	POST /v1/files; GET /v1/files, /v1/files/{id}; DELETE /v1/files/{id}
//	GET  /v1/realtime                             a WebSocket echoing every message
//	POST /v1/airlock-test/upload                  body size and SHA-256
//	GET  /v1/airlock-test/download?bytes=N        N PatternByte bytes
//	ANY  /v1/airlock-test/echo                    what the upstream received
//	GET  /v1/airlock-test/sse?events=N&interval=5ms&pad=0
//	GET  /v1/airlock-test/hold                    blocks until cancelled
//
// Request headers that shape answers, on every endpoint:
//
//	X-Test-Status: 503         answer this 4xx/5xx status with an OpenAI error JSON
//	X-Test-Delay: 2s           wait this long (or until cancelled) before answering
//	X-Test-Chunks: 40          chat/completions: exactly this many content tokens
//	X-Test-Chunk-Interval: 5ms chat/completions streams: pause between events
//
// The server never logs request or response bodies, and never echoes API keys.
package testupstream

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlock-proxy/airlock/internal/apierror"
)

// Options configure a Server. The zero value checks no key and paces streams
// at 20ms.
type Options struct {
	// APIKey is the key clients must present. Empty means no check.
	APIKey string
	// Auth says where the key is expected: "bearer" (Authorization: Bearer
	// KEY) or "api-key" (api-key: KEY, as Azure OpenAI does). Default:
	// "bearer"; any value other than "api-key" means "bearer".
	Auth string
	// ChunkInterval is the pause between SSE events of a stream. Requests can
	// override it with the X-Test-Chunk-Interval header. Default: 20ms; a
	// negative value means no pause.
	ChunkInterval time.Duration
	// StampEvents adds "airlock_sent_unix_ns": time.Now().UnixNano(), taken
	// just before the write, to every streamed chat or completion chunk, so a
	// client can measure each event's one-way latency. Default: false.
	StampEvents bool
}

// DefaultChunkInterval is the pause between stream events when
// Options.ChunkInterval is zero.
const DefaultChunkInterval = 20 * time.Millisecond

// requestsBuffer is the capacity of the Requests channel. When it is full,
// further RequestInfo values are dropped rather than blocking requests.
const requestsBuffer = 1024

// maxJSONBody bounds JSON request bodies; larger ones get a 413.
const maxJSONBody = 32 << 20

// rateLimitRequests is the value of x-ratelimit-limit-requests.
const rateLimitRequests = 10000

// Server is the test upstream. It is an http.Handler that serves paths under
// /v1/; mount it at the root of an http.Server or httptest.Server and use
// "http://HOST/v1" as the base URL. It is safe for concurrent use.
type Server struct {
	opts     Options
	requests chan RequestInfo
	served   atomic.Int64 // requests answered, for x-ratelimit-remaining-requests
	files    fileStore
}

// New returns a Server with opts.
func New(opts Options) *Server {
	if opts.ChunkInterval == 0 {
		opts.ChunkInterval = DefaultChunkInterval
	} else if opts.ChunkInterval < 0 {
		opts.ChunkInterval = 0
	}
	return &Server{
		opts:     opts,
		requests: make(chan RequestInfo, requestsBuffer),
		files:    fileStore{byID: make(map[string]*fileObject)},
	}
}

// RequestInfo describes one request the Server received. It is sent on
// [Server.Requests] when the request arrives, before it is answered.
type RequestInfo struct {
	// Method is the request method.
	Method string
	// Path is the escaped request path, e.g. "/v1/chat/completions".
	Path string
	// Query is the raw query string without "?".
	Query string
	// Header is a copy of the request headers as the server received them.
	Header http.Header
	// Done is closed when the request ends: its context was cancelled (the
	// client went away) or the handler returned, whichever came first.
	Done <-chan struct{}

	end *requestEnd
}

// Canceled reports whether the request ended because its context was
// cancelled, or a write to the client failed, before the handler finished.
// It is meaningful once Done is closed; before that it reports false.
func (i RequestInfo) Canceled() bool {
	if i.end == nil {
		return false
	}
	select {
	case <-i.end.done:
		return i.end.canceled
	default:
		return false
	}
}

// requestEnd records how a request ended. done is closed once; canceled is
// written before the close and read only after it.
type requestEnd struct {
	once     sync.Once
	done     chan struct{}
	canceled bool
}

func (e *requestEnd) finish(canceled bool) {
	e.once.Do(func() {
		e.canceled = canceled
		close(e.done)
	})
}

// Requests returns the channel on which every request is reported as it
// arrives. The channel is buffered; when nobody drains it and it is full,
// reports are dropped and requests are served anyway. It is never closed.
func (s *Server) Requests() <-chan RequestInfo {
	return s.requests
}

// ServeHTTP answers r. See the package documentation for the endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	end := &requestEnd{done: make(chan struct{})}
	rw := &responseWriter{ResponseWriter: w, start: time.Now()}
	stop := context.AfterFunc(r.Context(), func() { end.finish(true) })
	// Runs on return and on panic(http.ErrAbortHandler) alike. The request
	// context is still live here unless the client went away, since
	// net/http cancels it only after ServeHTTP returns.
	defer func() {
		stop()
		end.finish(r.Context().Err() != nil || rw.failed)
	}()

	select {
	case s.requests <- RequestInfo{
		Method: r.Method,
		Path:   r.URL.EscapedPath(),
		Query:  r.URL.RawQuery,
		Header: r.Header.Clone(),
		Done:   end.done,
		end:    end,
	}:
	default:
	}

	h := rw.Header()
	h.Set("X-Request-Id", "req_"+randomHex(16))
	h.Set("Openai-Version", "2020-10-01")
	h.Set("X-Ratelimit-Limit-Requests", strconv.Itoa(rateLimitRequests))
	n := s.served.Add(1)
	h.Set("X-Ratelimit-Remaining-Requests", strconv.FormatInt(rateLimitRequests-1-(n-1)%rateLimitRequests, 10))

	if !s.authorized(r) {
		writeError(rw, http.StatusUnauthorized, apierror.TypeInvalidRequest, "invalid_api_key", "",
			"airlock test upstream: missing or incorrect API key")
		return
	}
	if !testHeaders(rw, r) {
		return
	}
	s.route(rw, r)
}

// authorized reports whether r carries the configured key.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.APIKey == "" {
		return true
	}
	var got string
	if s.opts.Auth == "api-key" {
		got = r.Header.Get("Api-Key")
	} else {
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return false
		}
		got = strings.TrimSpace(token)
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.APIKey)) == 1
}

// testHeaders applies X-Test-Delay and X-Test-Status. It reports whether the
// request should still be routed.
func testHeaders(w http.ResponseWriter, r *http.Request) bool {
	if v := r.Header.Get("X-Test-Delay"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, apierror.TypeInvalidRequest, "", "",
				"airlock test upstream: X-Test-Delay must be a duration such as 2s")
			return false
		}
		if !sleep(r.Context(), d) {
			return false
		}
	}
	if v := r.Header.Get("X-Test-Status"); v != "" {
		code, err := strconv.Atoi(v)
		if err != nil || code < 400 || code > 599 {
			writeError(w, http.StatusBadRequest, apierror.TypeInvalidRequest, "", "",
				"airlock test upstream: X-Test-Status must be a status from 400 to 599")
			return false
		}
		typ := apierror.TypeInvalidRequest
		switch {
		case code == http.StatusTooManyRequests:
			typ = apierror.TypeRateLimit
		case code >= 500:
			typ = apierror.TypeServer
		}
		writeError(w, code, typ, "test_status", "",
			fmt.Sprintf("airlock test upstream: status %d requested by X-Test-Status", code))
		return false
	}
	return true
}

// handlerFunc answers one endpoint. Path parameters are in r.PathValue.
type handlerFunc func(s *Server, w http.ResponseWriter, r *http.Request)

// routes maps a path below /v1/ to its handlers by method; "*" matches any
// method, and a trailing "{id}" one path segment (r.PathValue("id")).
var routes = map[string]map[string]handlerFunc{
	"models":                {http.MethodGet: (*Server).listModels},
	"models/{id}":           {http.MethodGet: (*Server).getModel},
	"chat/completions":      {http.MethodPost: (*Server).chatCompletions},
	"completions":           {http.MethodPost: (*Server).completions},
	"embeddings":            {http.MethodPost: (*Server).embeddings},
	"audio/transcriptions":  {http.MethodPost: (*Server).transcriptions},
	"files":                 {http.MethodGet: (*Server).listFiles, http.MethodPost: (*Server).uploadFile},
	"files/{id}":            {http.MethodGet: (*Server).getFile, http.MethodDelete: (*Server).deleteFile},
	"airlock-test/upload":   {http.MethodPost: (*Server).bulkUpload, http.MethodPut: (*Server).bulkUpload},
	"airlock-test/download": {http.MethodGet: (*Server).bulkDownload},
	"airlock-test/echo":     {"*": (*Server).echo},
	"airlock-test/sse":      {http.MethodGet: (*Server).sse},
	"airlock-test/hold":     {http.MethodGet: (*Server).hold},
	"realtime":              {http.MethodGet: (*Server).realtime},
}

// route dispatches r by path, then by method.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	methods := match(r)
	if methods == nil {
		writeError(w, http.StatusNotFound, apierror.TypeInvalidRequest, "not_found", "",
			fmt.Sprintf("airlock test upstream: unknown path %s %s", r.Method, r.URL.EscapedPath()))
		return
	}
	h, ok := methods[r.Method]
	if !ok {
		h, ok = methods["*"]
	}
	if !ok {
		allow := make([]string, 0, len(methods))
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			if _, ok := methods[m]; ok {
				allow = append(allow, m)
			}
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, apierror.TypeInvalidRequest, "method_not_allowed", "",
			fmt.Sprintf("airlock test upstream: method %s not allowed on %s", r.Method, r.URL.EscapedPath()))
		return
	}
	h(s, w, r)
}

// match returns the handlers for r's path, setting the "id" path value for
// parameterised routes, or nil.
func match(r *http.Request) map[string]handlerFunc {
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		return nil
	}
	if m, ok := routes[rest]; ok {
		return m
	}
	dir, id, ok := strings.Cut(rest, "/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return nil
	}
	m, ok := routes[dir+"/{id}"]
	if !ok {
		return nil
	}
	r.SetPathValue("id", id)
	return m
}

// responseWriter stamps openai-processing-ms when the head is written and
// remembers whether a write failed, which means the client went away.
type responseWriter struct {
	http.ResponseWriter
	start       time.Time
	wroteHeader bool
	failed      bool
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.wroteHeader = true
		ms := time.Since(w.start).Milliseconds()
		w.Header().Set("Openai-Processing-Ms", strconv.FormatInt(ms, 10))
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	if err != nil {
		w.failed = true
	}
	return n, err
}

// FlushError sends buffered data to the client; http.ResponseController
// finds it.
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	err := http.NewResponseController(w.ResponseWriter).Flush()
	if err != nil {
		w.failed = true
	}
	return err
}

// Flush implements http.Flusher.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// flush sends what w buffered to the client.
func flush(w http.ResponseWriter) error {
	return http.NewResponseController(w).Flush()
}

// writeError answers status with an OpenAI error JSON. Empty code or param
// are sent as null.
func writeError(w http.ResponseWriter, status int, typ, code, param, msg string) {
	writeJSONBody(w, status, apierror.Body(typ, code, param, msg))
}

// badRequest answers 400 invalid_request_error about param.
func badRequest(w http.ResponseWriter, param, msg string) {
	writeError(w, http.StatusBadRequest, apierror.TypeInvalidRequest, "", param, "airlock test upstream: "+msg)
}

// requireModel answers 400 and returns false when model is empty, as the
// API does for a request without one.
func requireModel(w http.ResponseWriter, model string) bool {
	if model == "" {
		badRequest(w, "model", "you must provide a model parameter")
		return false
	}
	return true
}

// writeJSON answers status with v as JSON and a Content-Length.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types reach here; a failure is a bug in this package.
		panic(fmt.Sprintf("testupstream: marshal response: %v", err))
	}
	writeJSONBody(w, status, append(b, '\n'))
}

// writeJSONBody answers status with the JSON body b and a Content-Length.
func writeJSONBody(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// decodeJSON reads r's body as JSON into v. On failure it answers the error
// and returns false.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body := http.MaxBytesReader(w, r.Body, maxJSONBody)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, apierror.TypeInvalidRequest, "request_too_large", "",
				fmt.Sprintf("airlock test upstream: request body larger than %d bytes", maxJSONBody))
			return false
		}
		badRequest(w, "", "could not parse the JSON body of the request: "+err.Error())
		return false
	}
	// Read to EOF: net/http notices a client going away (and cancels the
	// request context) only once the request body has been consumed.
	_, _ = io.Copy(io.Discard, body)
	return true
}

// sleep waits d or until ctx ends. It reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails, see crypto/rand.Read
	return hex.EncodeToString(b)
}

// Interface guards.
var (
	_ http.Handler = (*Server)(nil)
	_ http.Flusher = (*responseWriter)(nil)
)
