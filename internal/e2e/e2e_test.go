package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"go.uber.org/goleak"

	"github.com/airlock-proxy/airlock/internal/testkit/devstack"
	"github.com/airlock-proxy/airlock/internal/testkit/testupstream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// transports are the tunnel transports the core tests run over.
var transports = []string{"quic", "tcp"}

// forEachTransport runs f as a subtest per tunnel transport.
func forEachTransport(t *testing.T, f func(t *testing.T, transport string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

// startStack runs edge + relay + test upstream for one test, with the edge
// on QUIC.
func startStack(t *testing.T, up testupstream.Options) *devstack.Stack {
	return startStackOver(t, "quic", up)
}

// startStackOver runs edge + relay + test upstream for one test, with the
// edge on transport.
func startStackOver(t *testing.T, transport string, up testupstream.Options) *devstack.Stack {
	t.Helper()
	return startStackWith(t, devstack.Options{TestUpstream: up, Transport: transport})
}

// startStackWith runs a stack with opts for one test and closes it at its
// end.
func startStackWith(t *testing.T, opts devstack.Options) *devstack.Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting the stack: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the stack: %v", err)
		}
	})
	return st
}

func sdk(st *devstack.Stack, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(st.EdgeURL+"/"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// drainRequests empties the upstream's request log, so that a test can then
// check what one request did.
func drainRequests(up *testupstream.Server) {
	for {
		select {
		case <-up.Requests():
		default:
			return
		}
	}
}

func TestChatCompletionJSON(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		st := startStackOver(t, transport, testupstream.Options{})
		c := sdk(st, st.ClientKey)
		resp, err := c.Chat.Completions.New(testCtx(t), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("ping through the tunnel")},
		})
		if err != nil {
			t.Fatalf("chat completion: %v", err)
		}
		if len(resp.Choices) != 1 || !strings.Contains(resp.Choices[0].Message.Content, "ping through the tunnel") {
			t.Fatalf("got choices %+v, want one answer quoting the prompt", resp.Choices)
		}
		if resp.Usage.TotalTokens == 0 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+resp.Usage.CompletionTokens {
			t.Errorf("got usage %+v, want consistent non-zero totals", resp.Usage)
		}
	})
}

func TestChatCompletionStreamArrivesEventByEvent(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		const interval = 40 * time.Millisecond
		const chunks = 8
		st := startStackOver(t, transport, testupstream.Options{ChunkInterval: interval})
		c := sdk(st, st.ClientKey)
		stream := c.Chat.Completions.NewStreaming(testCtx(t), openai.ChatCompletionNewParams{
			Model:         "gpt-4o-mini",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream me")},
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		}, option.WithHeader("X-Test-Chunks", fmt.Sprint(chunks)))
		defer stream.Close()

		var arrivals []time.Time
		var text strings.Builder
		var usage openai.CompletionUsage
		for stream.Next() {
			ch := stream.Current()
			arrivals = append(arrivals, time.Now())
			if len(ch.Choices) > 0 {
				text.WriteString(ch.Choices[0].Delta.Content)
			}
			if ch.Usage.TotalTokens > 0 {
				usage = ch.Usage
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
		if text.Len() == 0 {
			t.Fatal("got no content")
		}
		if usage.TotalTokens == 0 {
			t.Error("got no usage chunk, want one (include_usage)")
		}
		if len(arrivals) < chunks {
			t.Fatalf("got %d events, want at least %d", len(arrivals), chunks)
		}
		// The upstream spaces events by interval. Delivered one by one, they
		// arrive spread over about (n-1)*interval; buffered, they would arrive
		// together at the end. Wide bounds: half the pace, and most gaps.
		spread := arrivals[len(arrivals)-1].Sub(arrivals[0])
		if want := time.Duration(len(arrivals)-1) * interval / 2; spread < want {
			t.Errorf("events arrived within %v, want them spread over at least %v (upstream pace %v)", spread, want, interval)
		}
		spaced := 0
		for i := 1; i < len(arrivals); i++ {
			if arrivals[i].Sub(arrivals[i-1]) >= interval/4 {
				spaced++
			}
		}
		if spaced < (len(arrivals)-1)/2 {
			t.Errorf("only %d of %d gaps between events were at least %v: events are being merged", spaced, len(arrivals)-1, interval/4)
		}
	})
}

func TestEmbeddingsAndModels(t *testing.T) {
	st := startStack(t, testupstream.Options{})
	c := sdk(st, st.ClientKey)
	ctx := testCtx(t)
	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: openai.EmbeddingModelTextEmbedding3Small,
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one", "two"}},
	})
	if err != nil {
		t.Fatalf("embeddings: %v", err)
	}
	if len(emb.Data) != 2 || len(emb.Data[0].Embedding) == 0 {
		t.Fatalf("got %d embeddings (first of length %d), want 2 non-empty", len(emb.Data), len(emb.Data[0].Embedding))
	}
	page, err := c.Models.List(ctx)
	if err != nil {
		t.Fatalf("models: %v", err)
	}
	if len(page.Data) == 0 {
		t.Fatal("got no models")
	}
}

func TestMultipartUploads(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		st := startStackOver(t, transport, testupstream.Options{})
		c := sdk(st, st.ClientKey)
		ctx := testCtx(t)
		audio := bytes.Repeat([]byte("RIFF-not-really-audio"), 50_000) // ~1 MB
		tr, err := c.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{
			File:  openai.File(bytes.NewReader(audio), "speech.wav", "audio/wav"),
			Model: openai.AudioModelGPTTranscribe,
		})
		if err != nil {
			t.Fatalf("transcription: %v", err)
		}
		if !strings.Contains(tr.Text, fmt.Sprint(len(audio))) {
			t.Errorf("got transcription %q, want it to count %d bytes", tr.Text, len(audio))
		}
		doc := bytes.Repeat([]byte(`{"prompt":"x","completion":"y"}`+"\n"), 20_000)
		f, err := c.Files.New(ctx, openai.FileNewParams{
			File:    openai.File(bytes.NewReader(doc), "train.jsonl", "application/jsonl"),
			Purpose: openai.FilePurposeFineTune,
		})
		if err != nil {
			t.Fatalf("file upload: %v", err)
		}
		if f.Bytes != int64(len(doc)) || f.Filename != "train.jsonl" {
			t.Errorf("got file %d bytes named %q, want %d bytes named train.jsonl", f.Bytes, f.Filename, len(doc))
		}
	})
}

func TestWrongClientKeyIsAuthenticationError(t *testing.T) {
	st := startStack(t, testupstream.Options{})
	drainRequests(st.Upstream)
	c := sdk(st, "sk-airlock-not-a-real-key")
	_, err := c.Models.List(testCtx(t))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got error %v, want an *openai.Error", err)
	}
	if apiErr.StatusCode != http.StatusUnauthorized || apiErr.Type != "invalid_request_error" || apiErr.Code != "invalid_api_key" {
		t.Errorf("got status %d type %q code %q, want 401 invalid_request_error invalid_api_key", apiErr.StatusCode, apiErr.Type, apiErr.Code)
	}
	if strings.Contains(apiErr.Message, "sk-airlock-not-a-real-key") {
		t.Errorf("error message %q echoes the key", apiErr.Message)
	}
	select {
	case info := <-st.Upstream.Requests():
		t.Errorf("upstream got %s %s for a rejected client", info.Method, info.Path)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestUpstreamSeesRelayKeyNotClientKey(t *testing.T) {
	st := startStack(t, testupstream.Options{})
	req, _ := http.NewRequest("GET", st.EdgeURL+"/airlock-test/echo?a=1&b=two", nil)
	req.Header.Set("Authorization", "Bearer "+st.ClientKey)
	req.Header.Set("X-Forwarded-For", "10.1.2.3")
	req.Header.Set("OpenAI-Organization", "org-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got status %d, want 200 (the upstream checks the relay's key)", resp.StatusCode)
	}
	raw, _ := io.ReadAll(resp.Body)
	if bytes.Contains(raw, []byte(st.ClientKey)) {
		t.Fatalf("upstream saw the client's key: %s", raw)
	}
	var echo struct {
		Query   string              `json:"query"`
		Headers map[string][]string `json:"headers"`
	}
	if err := json.Unmarshal(raw, &echo); err != nil {
		t.Fatalf("decoding echo %q: %v", raw, err)
	}
	h := http.Header(echo.Headers)
	if h.Get("Authorization") == "" {
		t.Error("upstream saw no Authorization, want the relay's key")
	}
	if h.Get("X-Forwarded-For") != "" {
		t.Errorf("upstream saw X-Forwarded-For %q, want none", h.Get("X-Forwarded-For"))
	}
	if h.Get("Openai-Organization") != "org-test" {
		t.Errorf("upstream saw OpenAI-Organization %q, want org-test", h.Get("Openai-Organization"))
	}
	if echo.Query != "a=1&b=two" {
		t.Errorf("upstream saw query %q, want a=1&b=two", echo.Query)
	}
	if resp.Header.Get("X-Request-Id") == "" || resp.Header.Get("Openai-Processing-Ms") == "" {
		t.Errorf("got response headers %v, want the upstream's x-request-id and openai-processing-ms", resp.Header)
	}
}

func TestClientCancelStopsUpstream(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		st := startStackOver(t, transport, testupstream.Options{ChunkInterval: 50 * time.Millisecond})
		drainRequests(st.Upstream)
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		c := sdk(st, st.ClientKey)
		stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a long answer please")},
		}, option.WithHeader("X-Test-Chunks", "1000"))
		defer stream.Close()
		if !stream.Next() {
			t.Fatalf("got no first event: %v", stream.Err())
		}
		var info testupstream.RequestInfo
		select {
		case info = <-st.Upstream.Requests():
		case <-time.After(2 * time.Second):
			t.Fatal("upstream saw no request")
		}
		cancelled := time.Now()
		cancel()
		select {
		case <-info.Done:
			if d := time.Since(cancelled); d > 200*time.Millisecond {
				t.Errorf("upstream request ended %v after the client cancelled, want within 200ms", d)
			}
			if !info.Canceled() {
				t.Error("upstream request ended without its context being cancelled")
			}
		case <-time.After(2 * time.Second):
			t.Fatal("upstream request still running 2s after the client cancelled")
		}
	})
}

func TestUpstreamDyingMidStreamIsAnError(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		st := startStackOver(t, transport, testupstream.Options{ChunkInterval: 5 * time.Millisecond})
		c := sdk(st, st.ClientKey)
		stream := c.Chat.Completions.NewStreaming(testCtx(t), openai.ChatCompletionNewParams{
			Model:    "test-die-midstream",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		defer stream.Close()
		events := 0
		for stream.Next() {
			events++
		}
		if stream.Err() == nil {
			t.Fatalf("stream ended cleanly after %d events, want an error: a cut stream must never look complete", events)
		}
		if events == 0 {
			t.Errorf("got no events before the cut, want the ones the upstream sent")
		}
	})
}

// patternReader yields n bytes of a repeating pattern without holding them.
type patternReader struct{ left int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.left)
	for i := range p[:n] {
		p[i] = byte('a' + (r.left-int64(i))%26)
	}
	r.left -= n
	return int(n), nil
}

// TestBulkTransfersUseBoundedMemory: moving 64 MiB each way through edge
// and relay (one process here) grows the heap by a bounded amount, not by
// the transfer. The bound: a stream's receive window can fill (QUIC: at most
// 8 MiB), and the heap holds about as much again as garbage before the
// collector runs (GOGC=100), plus copy buffers; 16 MiB was exceeded now and
// then under -race (19 MiB).
func TestBulkTransfersUseBoundedMemory(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		const size = 64 << 20
		const budget = 24 << 20
		st := startStackOver(t, transport, testupstream.Options{})
		peak := watchHeap(t)

		// Upload: 64 MiB of unknown length (chunked) through edge and relay.
		want := sha256.New()
		io.Copy(want, &patternReader{left: size})
		req, _ := http.NewRequest("POST", st.EdgeURL+"/airlock-test/upload", io.NopCloser(&patternReader{left: size}))
		req.Header.Set("Authorization", "Bearer "+st.ClientKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
		var got struct {
			Bytes  int64  `json:"bytes"`
			SHA256 string `json:"sha256"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("upload answer: status %d, %v", resp.StatusCode, err)
		}
		if got.Bytes != size || got.SHA256 != hex.EncodeToString(want.Sum(nil)) {
			t.Errorf("upstream got %d bytes sha256 %s, want %d bytes sha256 %x", got.Bytes, got.SHA256, size, want.Sum(nil))
		}

		// Download: 64 MiB streamed back.
		req, _ = http.NewRequest("GET", fmt.Sprintf("%s/airlock-test/download?bytes=%d", st.EdgeURL, size), nil)
		req.Header.Set("Authorization", "Bearer "+st.ClientKey)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			t.Fatalf("download: got %d bytes (%v), want %d", n, err, size)
		}
		if g := peak(); g > budget {
			t.Errorf("heap grew by %d MiB while moving 2×64 MiB, want under %d MiB", g>>20, budget>>20)
		}
		if testing.Verbose() {
			t.Logf("heap peak growth %.1f MiB", float64(peak())/(1<<20))
		}
	})
}

// TestExternalUpstream runs the stack the way `airlock dev -upstream URL
// -upstream-key-env VAR` does: against an upstream that devstack did not
// start, with a key that only the relay is given.
func TestExternalUpstream(t *testing.T) {
	const upstreamKey = "sk-real-upstream-key"
	up := testupstream.New(testupstream.Options{APIKey: upstreamKey, Auth: "api-key"})
	srv := httptest.NewServer(up)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{UpstreamURL: srv.URL + "/v1", UpstreamKey: upstreamKey, UpstreamAuth: "api-key"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Upstream != nil {
		t.Error("devstack started its own upstream next to the external one")
	}
	c := sdk(st, st.ClientKey)
	resp, err := c.Chat.Completions.New(testCtx(t), openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("external")},
	})
	if err != nil {
		t.Fatalf("chat through the external upstream: %v", err)
	}
	if !strings.Contains(resp.Choices[0].Message.Content, "external") {
		t.Errorf("got %q", resp.Choices[0].Message.Content)
	}
	info := <-up.Requests()
	if got := info.Header.Get("Api-Key"); got != upstreamKey {
		t.Errorf("upstream got api-key %q, want the relay's key", got)
	}
	if got := info.Header.Get("Authorization"); got != "" {
		t.Errorf("upstream got Authorization %q, want none (api-key auth, client key removed)", got)
	}
}
