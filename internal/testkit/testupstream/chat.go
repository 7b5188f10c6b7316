package testupstream

// Chat and legacy text completions: deterministic replies, split into
// word-sized tokens, answered as one JSON object or as an SSE stream paced
// by the chunk interval.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DieMidstreamModel is a model name that makes chat and text completions
// fail on purpose: a stream sends three chunks and then the connection is
// aborted; a JSON answer is cut off after half its declared Content-Length.
const DieMidstreamModel = "test-die-midstream"

// replySuffix follows "You said: <last user message>" in every reply. With a
// one-word message the reply is 12 tokens.
const replySuffix = "The airlock test upstream is replying word by word."

// maxChunks bounds X-Test-Chunks.
const maxChunks = 1_000_000

// fingerprint is the system_fingerprint of every completion.
const fingerprint = "fp_airlock_test"

type chatRequest struct {
	Model         string        `json:"model"`
	Messages      []chatMessage `json:"messages"`
	Stream        bool          `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int `json:"max_tokens"`
	MaxCompletionTokens *int `json:"max_completion_tokens"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// text returns the message's text: a string content, or the text parts of an
// array content.
func (m chatMessage) text() string {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(m.Content, &parts) != nil {
		return ""
	}
	texts := make([]string, 0, len(parts))
	for _, p := range parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, " ")
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func newUsage(prompt, completion int) *usage {
	return &usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
}

type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Choices           []chatChoice `json:"choices"`
	Usage             *usage       `json:"usage"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      responseMessage `json:"message"`
	Logprobs     *struct{}       `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type responseMessage struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type chatChunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	SystemFingerprint string        `json:"system_fingerprint"`
	Choices           []chunkChoice `json:"choices"`
	Usage             *usage        `json:"usage,omitempty"`
	SentUnixNs        int64         `json:"airlock_sent_unix_ns,omitempty"`
}

type chunkChoice struct {
	Index        int        `json:"index"`
	Delta        chunkDelta `json:"delta"`
	Logprobs     *struct{}  `json:"logprobs"`
	FinishReason *string    `json:"finish_reason"`
}

type chunkDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// completionRequest is a legacy /v1/completions request.
type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens *int `json:"max_tokens"`
}

type textCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Choices           []textChoice `json:"choices"`
	Usage             *usage       `json:"usage,omitempty"`
	SentUnixNs        int64        `json:"airlock_sent_unix_ns,omitempty"`
}

type textChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// reply is what the model "generates" for one request. Tokens are made on
// demand so that X-Test-Chunks can ask for long streams cheaply.
type reply struct {
	words        []string // the natural reply, split on spaces
	n            int      // number of content tokens
	finishReason string   // "stop" or "length"
	promptTokens int
}

// token returns content token i: words cycle, and every token but the first
// starts with a space.
func (rp *reply) token(i int) string {
	w := rp.words[i%len(rp.words)]
	if i > 0 {
		return " " + w
	}
	return w
}

func (rp *reply) content() string {
	var b strings.Builder
	for i := range rp.n {
		b.WriteString(rp.token(i))
	}
	return b.String()
}

// newReply builds the reply to prompt. chunks > 0 forces exactly that many
// tokens (cycling the natural reply); limit > 0 truncates to that many with
// finish reason "length".
func newReply(prompt string, promptTokens, chunks, limit int) *reply {
	rp := &reply{
		words:        strings.Fields("You said: " + strings.Join(strings.Fields(prompt), " ") + ". " + replySuffix),
		finishReason: "stop",
		promptTokens: promptTokens,
	}
	rp.n = len(rp.words)
	if chunks > 0 {
		rp.n = chunks
	}
	if limit > 0 && limit < rp.n {
		rp.n, rp.finishReason = limit, "length"
	}
	return rp
}

// countTokens counts s's tokens the way replies are tokenized: by words.
func countTokens(s string) int { return len(strings.Fields(s)) }

// streamShape is how a request wants its stream paced, from the X-Test-*
// headers and the server's options.
type streamShape struct {
	chunks   int // 0 = natural reply length
	interval time.Duration
}

// shape reads X-Test-Chunks and X-Test-Chunk-Interval. On a bad value it
// answers 400 and returns false.
func (s *Server) shape(w http.ResponseWriter, r *http.Request) (streamShape, bool) {
	sh := streamShape{interval: s.opts.ChunkInterval}
	if v := r.Header.Get("X-Test-Chunks"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxChunks {
			badRequest(w, "", fmt.Sprintf("X-Test-Chunks must be an integer from 1 to %d", maxChunks))
			return sh, false
		}
		sh.chunks = n
	}
	if v := r.Header.Get("X-Test-Chunk-Interval"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			badRequest(w, "", "X-Test-Chunk-Interval must be a non-negative duration such as 5ms")
			return sh, false
		}
		sh.interval = d
	}
	return sh, true
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if !requireModel(w, req.Model) {
		return
	}
	if len(req.Messages) == 0 {
		badRequest(w, "messages", "messages must be a non-empty array")
		return
	}
	sh, ok := s.shape(w, r)
	if !ok {
		return
	}
	promptTokens, last := 0, ""
	for _, m := range req.Messages {
		t := m.text()
		promptTokens += countTokens(t)
		if m.Role == "user" {
			last = t
		}
	}
	if last == "" {
		last = req.Messages[len(req.Messages)-1].text()
	}
	limit := 0
	if req.MaxCompletionTokens != nil {
		limit = *req.MaxCompletionTokens
	} else if req.MaxTokens != nil {
		limit = *req.MaxTokens
	}
	rp := newReply(last, promptTokens, sh.chunks, limit)
	id, created := "chatcmpl-"+randomHex(12), time.Now().Unix()

	if !req.Stream {
		resp := chatCompletion{
			ID: id, Object: "chat.completion", Created: created, Model: req.Model,
			SystemFingerprint: fingerprint,
			Choices: []chatChoice{{
				Message:      responseMessage{Role: "assistant", Content: rp.content()},
				FinishReason: rp.finishReason,
			}},
			Usage: newUsage(rp.promptTokens, rp.n),
		}
		if req.Model == DieMidstreamModel {
			writeTruncatedJSON(w, resp)
		}
		writeJSON(w, http.StatusOK, resp)
		return
	}

	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	n := rp.n + 2 // role, tokens, finish
	if includeUsage {
		n++
	}
	empty := ""
	var e chatChunk
	s.stream(w, r, sh.interval, n, req.Model == DieMidstreamModel, func(i int) any {
		e = chatChunk{
			ID: id, Object: "chat.completion.chunk", Created: created, Model: req.Model,
			SystemFingerprint: fingerprint,
			Choices:           []chunkChoice{{}},
		}
		switch {
		case i == 0:
			e.Choices[0].Delta = chunkDelta{Role: "assistant", Content: &empty}
		case i <= rp.n:
			t := rp.token(i - 1)
			e.Choices[0].Delta.Content = &t
		case i == rp.n+1:
			e.Choices[0].FinishReason = &rp.finishReason
		default:
			e.Choices = []chunkChoice{}
			e.Usage = newUsage(rp.promptTokens, rp.n)
		}
		if s.opts.StampEvents {
			e.SentUnixNs = time.Now().UnixNano()
		}
		return &e
	})
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if !requireModel(w, req.Model) {
		return
	}
	prompts, ok := embeddingInputs(req.Prompt)
	if !ok || len(prompts) == 0 {
		badRequest(w, "prompt", "prompt must be a string, an array of strings, or an array of token arrays")
		return
	}
	sh, ok := s.shape(w, r)
	if !ok {
		return
	}
	promptTokens := 0
	for _, p := range prompts {
		promptTokens += p.tokens
	}
	limit := 0
	if req.MaxTokens != nil {
		limit = *req.MaxTokens
	}
	rp := newReply(prompts[len(prompts)-1].text, promptTokens, sh.chunks, limit)
	id, created := "cmpl-"+randomHex(12), time.Now().Unix()
	base := textCompletion{
		ID: id, Object: "text_completion", Created: created, Model: req.Model,
		SystemFingerprint: fingerprint,
	}

	if !req.Stream {
		resp := base
		resp.Choices = []textChoice{{Text: rp.content(), FinishReason: &rp.finishReason}}
		resp.Usage = newUsage(rp.promptTokens, rp.n)
		if req.Model == DieMidstreamModel {
			writeTruncatedJSON(w, resp)
		}
		writeJSON(w, http.StatusOK, resp)
		return
	}

	n := rp.n
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		n++
	}
	var e textCompletion
	s.stream(w, r, sh.interval, n, req.Model == DieMidstreamModel, func(i int) any {
		e = base
		if i < rp.n {
			e.Choices = []textChoice{{Text: rp.token(i)}}
			if i == rp.n-1 {
				e.Choices[0].FinishReason = &rp.finishReason
			}
		} else {
			e.Choices = []textChoice{}
			e.Usage = newUsage(rp.promptTokens, rp.n)
		}
		if s.opts.StampEvents {
			e.SentUnixNs = time.Now().UnixNano()
		}
		return &e
	})
}

// dieAfter is how many events a DieMidstreamModel stream sends before the
// connection is aborted.
const dieAfter = 3

// stream answers an SSE stream of n events, event(i) giving each one's value
// to marshal (called just before its write, so stamps are fresh), pausing interval before every event but the first, then
// "data: [DONE]". Each event is flushed on its own. It returns as soon as the
// request context ends or a write fails. With die it aborts the connection
// after dieAfter events.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, interval time.Duration, n int, die bool,
	event func(i int) any) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if flush(w) != nil {
		return
	}
	ctx := r.Context()
	var timer *time.Timer
	if interval > 0 {
		timer = time.NewTimer(interval)
		defer timer.Stop()
	}
	buf := make([]byte, 0, 512)
	for i := range n {
		if die && i == dieAfter {
			panic(http.ErrAbortHandler)
		}
		if i > 0 && timer != nil {
			timer.Reset(interval)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		} else if ctx.Err() != nil {
			return
		}
		b, err := json.Marshal(event(i))
		if err != nil {
			panic(fmt.Sprintf("testupstream: marshal event: %v", err))
		}
		buf = append(append(append(buf[:0], "data: "...), b...), "\n\n"...)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if flush(w) != nil {
			return
		}
	}
	if die {
		panic(http.ErrAbortHandler)
	}
	if _, err := w.Write([]byte("data: [DONE]\n\n")); err != nil {
		return
	}
	_ = flush(w)
}

// writeTruncatedJSON declares v's full length, writes half of it and aborts
// the connection, as an upstream that dies mid-body does.
func writeTruncatedJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("testupstream: marshal response: %v", err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b[:len(b)/2])
	_ = flush(w)
	panic(http.ErrAbortHandler)
}
