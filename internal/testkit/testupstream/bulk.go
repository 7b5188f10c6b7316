package testupstream

// Helpers under /v1/airlock-test/ that exist only for tests and the
// benchmark: bulk upload and download, a request echo, a stamped SSE stream,
// and a request that holds until it is cancelled.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// bulkWrite is the size of each write of a download.
const bulkWrite = 32 << 10

// maxSSEEvents bounds the events parameter of /v1/airlock-test/sse.
const maxSSEEvents = 1_000_000

// maxSSEPad bounds the pad parameter of /v1/airlock-test/sse.
const maxSSEPad = 1 << 20

// PatternByte is byte i of every download: the bytes 0x00..0xff repeating.
func PatternByte(i int64) byte { return byte(i) }

// pattern is one write's worth of download bytes; bulkWrite is a multiple of
// 256, so every write starts at a pattern boundary.
var pattern = func() []byte {
	b := make([]byte, bulkWrite)
	for i := range b {
		b[i] = PatternByte(int64(i))
	}
	return b
}()

// UploadResult is the answer to POST /v1/airlock-test/upload.
type UploadResult struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"` // lowercase hex
}

// bulkUpload consumes the body as it streams in and answers its size and
// SHA-256.
func (s *Server) bulkUpload(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away
		}
		badRequest(w, "", "reading body: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, UploadResult{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))})
}

// bulkDownload streams ?bytes=N pattern bytes with a Content-Length, in
// 32 KiB writes.
func (s *Server) bulkDownload(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
	if err != nil || n < 0 {
		badRequest(w, "bytes", "bytes must be a non-negative integer")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	for n > 0 && ctx.Err() == nil {
		chunk := pattern[:min(n, int64(len(pattern)))]
		if _, err := w.Write(chunk); err != nil {
			return
		}
		n -= int64(len(chunk))
	}
}

// EchoResult is the answer to any request to /v1/airlock-test/echo: what
// the upstream received.
type EchoResult struct {
	Method           string              `json:"method"`
	Path             string              `json:"path"`  // escaped
	RawQuery         string              `json:"query"` // raw, without "?"
	Host             string              `json:"host"`
	Proto            string              `json:"proto"`
	Header           map[string][]string `json:"headers"`
	TransferEncoding []string            `json:"transfer_encoding,omitempty"`
	ContentLength    int64               `json:"content_length"`
	BodyBytes        int64               `json:"body_bytes"`
}

// echo answers what it received. It reads and counts the body, whatever
// the method.
func (s *Server) echo(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		badRequest(w, "", "reading body: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, EchoResult{
		Method:           r.Method,
		Path:             r.URL.EscapedPath(),
		RawQuery:         r.URL.RawQuery,
		Host:             r.Host,
		Proto:            r.Proto,
		Header:           r.Header,
		TransferEncoding: r.TransferEncoding,
		ContentLength:    r.ContentLength,
		BodyBytes:        n,
	})
}

// SSEEvent is the JSON of each event of /v1/airlock-test/sse.
type SSEEvent struct {
	Seq        int    `json:"seq"`
	SentUnixNs int64  `json:"airlock_sent_unix_ns"`
	Pad        string `json:"pad,omitempty"`
}

// sse streams ?events=N (default 10) events `data: {"seq":i,...}`, pausing
// ?interval= (default the chunk interval) before each but the first, each
// padded with ?pad= bytes (default 0), then `data: [DONE]`.
func (s *Server) sse(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, interval, pad := 10, s.opts.ChunkInterval, 0
	var err error
	if v := q.Get("events"); v != "" {
		if n, err = strconv.Atoi(v); err != nil || n < 0 || n > maxSSEEvents {
			badRequest(w, "events", fmt.Sprintf("events must be an integer from 0 to %d", maxSSEEvents))
			return
		}
	}
	if v := q.Get("interval"); v != "" {
		if interval, err = time.ParseDuration(v); err != nil || interval < 0 {
			badRequest(w, "interval", "interval must be a non-negative duration such as 5ms")
			return
		}
	}
	if v := q.Get("pad"); v != "" {
		if pad, err = strconv.Atoi(v); err != nil || pad < 0 || pad > maxSSEPad {
			badRequest(w, "pad", fmt.Sprintf("pad must be an integer from 0 to %d", maxSSEPad))
			return
		}
	}
	e := SSEEvent{Pad: strings.Repeat("x", pad)}
	s.stream(w, r, interval, n, false, func(i int) any {
		e.Seq, e.SentUnixNs = i, time.Now().UnixNano()
		return &e
	})
}

// holdComment is the SSE comment /v1/airlock-test/hold sends before it
// blocks.
const holdComment = ": airlock test upstream holding until cancelled\n\n"

// hold sends a head and one SSE comment, then blocks until the request
// context ends: the client went away or the server shut down.
func (s *Server) hold(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(w, holdComment); err != nil {
		return
	}
	if flush(w) != nil {
		return
	}
	<-r.Context().Done()
}
