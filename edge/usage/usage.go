// Package usage counts the tokens an OpenAI-compatible API reports in a
// response, by watching the response body as it streams past, without
// buffering it.
//
// A [Meter] reads the body's chunks in order and finds the usage report the
// upstream put in it:
//
//   - application/json: the top-level "usage" and "model" members of a chat
//     completion, completion, embedding list or Responses API response object,
//     wherever they are in the object;
//   - text/event-stream: in chat completion and completion streams, the last
//     event with a non-null top-level "usage" (the extra final chunk that
//     stream_options.include_usage asks for, or a content chunk for servers that
//     put it there), and the top-level "model"; in Responses API streams, the
//     "response"."usage" of the event that ends the stream (response.completed,
//     response.incomplete or response.failed, known by the "type" member of the
//     event's data), and "response"."model". Other events with a top-level
//     "usage" (such as transcription or image generation streams) count too.
//
// Counts are read from prompt_tokens, completion_tokens and total_tokens, or
// from the Responses API's input_tokens, output_tokens and total_tokens; a
// usage object with none of them (such as a transcription's duration) is not a
// report. A "usage" or "model" anywhere else (in a message, in a tool call's
// arguments, in any nested object) is never taken: the meter follows the JSON
// structure, tracking nesting depth, strings and escapes, and copies only the
// values of the few members above. An event counts only once it is complete
// (ended by a blank line) and its data is a whole JSON object. Other content
// types are not metered.
//
// Memory is bounded whatever the size of the response: a meter copies at most
// 4 KiB of a usage object (a larger one is ignored) and 256 bytes of a model
// name, in buffers allocated once at those sizes, and holds at most three
// usage copies, so it never holds more than about 14 KiB. It skips the rest of
// the body (base64 images, embeddings, long texts, even a single event
// megabytes long) without copying it, mostly at memory speed, and does not
// allocate while reading once its buffers exist.
package usage

import (
	"cmp"
	"encoding/json"
	"strings"
)

// Usage is the token usage an upstream reported for one response.
type Usage struct {
	// Model is the model the upstream says answered, "" if it did not say.
	Model string
	// PromptTokens is the number of input tokens: prompt_tokens, or the
	// Responses API's input_tokens.
	PromptTokens int64
	// CompletionTokens is the number of output tokens: completion_tokens, or
	// the Responses API's output_tokens; 0 for embeddings.
	CompletionTokens int64
	// TotalTokens is total_tokens, or PromptTokens+CompletionTokens when the
	// report has none.
	TotalTokens int64
}

// kind is how a meter reads its body.
type kind uint8

const (
	kindNone  kind = iota // not metered
	kindSniff             // not known yet: decided by the first bytes
	kindJSON              // one JSON document
	kindSSE               // server-sent events whose data are JSON documents
)

// A Meter finds the token usage in one response body as it streams past. It
// is created with [NewMeter], given the body's chunks with Write, and asked
// for the result with Result. A Meter is not safe for concurrent use.
type Meter struct {
	kind kind
	sc   scanner // the JSON document being read: the body, or the current event's data

	prefix  []byte // while sniffing, the SSE line start that the body began with
	matched int    // how many bytes of prefix were seen

	sse sseState

	// Committed by SSE events that are complete.
	model string // raw JSON string
	usage []byte // raw JSON object, nil when none
	// finished is set once an event stream's last event was seen.
	finished bool
}

// NewMeter returns a meter for a response body with the given Content-Type
// header. application/json and text/event-stream bodies are metered; when
// contentType is "", the body's first bytes decide: a '{' means JSON, and
// "data:", "event:" or ":" means server-sent events. Any other body is not
// metered.
func NewMeter(contentType string) *Meter {
	return &Meter{kind: kindFor(contentType)}
}

// kindFor returns how to read a body with the given Content-Type.
func kindFor(contentType string) kind {
	mediaType, _, _ := strings.Cut(contentType, ";")
	mediaType = strings.TrimSpace(mediaType)
	switch {
	case mediaType == "":
		return kindSniff
	case strings.EqualFold(mediaType, "application/json"):
		return kindJSON
	case strings.EqualFold(mediaType, "text/event-stream"):
		return kindSSE
	}
	return kindNone
}

// Write reads the next chunk of the body, which must be given in order and
// as decoded (not content-encoded) bytes. It neither fails nor keeps p: it
// always returns len(p), nil, so that a Meter is an [io.Writer].
func (m *Meter) Write(p []byte) (int, error) {
	n := len(p)
	if m.kind == kindSniff {
		p = m.sniff(p)
	}
	switch m.kind {
	case kindJSON:
		m.sc.feed(p)
	case kindSSE:
		m.writeSSE(p)
	}
	return n, nil
}

// ssePrefixes are the line starts that make a body without a Content-Type
// server-sent events.
var ssePrefixes = [...][]byte{[]byte("data:"), []byte("event:"), []byte(":")}

// sniff decides the kind of a body without a Content-Type from its first
// bytes, and returns the part of p that the chosen reader has yet to read.
func (m *Meter) sniff(p []byte) []byte {
	for i, c := range p {
		switch {
		case m.prefix != nil:
			if c != m.prefix[m.matched] {
				m.kind = kindNone
				return nil
			}
			m.matched++
		case isSpace(c):
			continue
		case c == '{':
			m.kind = kindJSON
			return p[i:]
		default:
			for _, prefix := range ssePrefixes {
				if prefix[0] == c {
					m.prefix, m.matched = prefix, 1
				}
			}
			if m.prefix == nil {
				m.kind = kindNone
				return nil
			}
		}
		if m.matched == len(m.prefix) {
			m.kind = kindSSE
			m.writeSSE(m.prefix)
			return p[i+1:]
		}
	}
	return nil
}

// Finished reports whether the body's end, as the API marks it, has been
// seen: the close of a JSON body's top-level object, or an event stream's
// last event (the data "[DONE]" of chat and completions streams, or a
// Responses API terminal event). A client that leaves after that has had
// the whole answer, even if the transport's own end had not come yet.
func (m *Meter) Finished() bool {
	switch m.kind {
	case kindJSON:
		return m.sc.doc == docDone
	case kindSSE:
		return m.finished
	}
	return false
}

// Result returns the usage reported in the body so far, and whether there was
// a report with at least one token count. It can be called at any time, also
// when the body was cut short; Usage.Model may be set without a report.
func (m *Meter) Result() (Usage, bool) {
	model, usage := m.model, m.usage
	if m.kind == kindJSON {
		model, usage = string(m.sc.model()), nil
		if c := m.sc.usage(); c != nil {
			usage = c.buf
		}
	}
	u := Usage{Model: decodeString(model)}
	return u, u.decode(usage)
}

// decodeString returns the JSON string raw, or "" if raw is not one.
func decodeString(raw string) string {
	var s string
	if raw == "" || json.Unmarshal([]byte(raw), &s) != nil {
		return ""
	}
	return s
}

// decode sets u's counts from the raw usage object, and reports whether it
// has any.
func (u *Usage) decode(raw []byte) bool {
	if raw == nil {
		return false
	}
	var v struct {
		PromptTokens     *int64 `json:"prompt_tokens"`
		CompletionTokens *int64 `json:"completion_tokens"`
		InputTokens      *int64 `json:"input_tokens"`
		OutputTokens     *int64 `json:"output_tokens"`
		TotalTokens      *int64 `json:"total_tokens"`
	}
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	prompt, completion := cmp.Or(v.PromptTokens, v.InputTokens), cmp.Or(v.CompletionTokens, v.OutputTokens)
	if prompt == nil && completion == nil && v.TotalTokens == nil {
		return false
	}
	u.PromptTokens, u.CompletionTokens = deref(prompt), deref(completion)
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	if v.TotalTokens != nil {
		u.TotalTokens = *v.TotalTokens
	}
	return true
}

// deref returns *p, or 0 if p is nil.
func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
