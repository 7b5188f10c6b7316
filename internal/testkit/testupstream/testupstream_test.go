package testupstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

const testKey = "sk-test-upstream-key"

// newUpstream starts a Server on a loopback httptest server and returns an
// official SDK client for it.
func newUpstream(t *testing.T, opts Options) (*Server, *httptest.Server, openai.Client) {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	up := New(opts)
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	client := openai.NewClient(
		option.WithBaseURL(srv.URL+"/v1/"),
		option.WithAPIKey(opts.APIKey),
		option.WithHTTPClient(srv.Client()),
		option.WithMaxRetries(0),
	)
	return up, srv, client
}

// nextRequest returns the next request the upstream saw for path.
func nextRequest(t *testing.T, up *Server, path string) RequestInfo {
	t.Helper()
	timeout := time.After(2 * time.Second)
	for {
		select {
		case info := <-up.Requests():
			if info.Path == path {
				return info
			}
		case <-timeout:
			t.Fatalf("no request for %s reached the upstream", path)
		}
	}
}

// waitCanceled asserts that info's request ends by cancellation within d.
func waitCanceled(t *testing.T, info RequestInfo, d time.Duration) {
	t.Helper()
	select {
	case <-info.Done:
	case <-time.After(d):
		t.Fatalf("request context still live %v after the client cancelled", d)
	}
	if !info.Canceled() {
		t.Errorf("Canceled() = false, want true")
	}
}

func wantReply(prompt string) string {
	return "You said: " + prompt + ". " + replySuffix
}

func TestChatCompletion(t *testing.T) {
	up, _, client := newUpstream(t, Options{})
	var res *http.Response
	got, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "airlock-test-1",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("be brief"),
			openai.UserMessage("hello there"),
		},
	}, option.WithResponseInto(&res))
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	info := nextRequest(t, up, "/v1/chat/completions")
	t.Logf("SDK request headers: %v", info.Header)

	if !strings.HasPrefix(got.ID, "chatcmpl-") {
		t.Errorf("id = %q, want chatcmpl-...", got.ID)
	}
	if got.Object != "chat.completion" || got.Model != "airlock-test-1" || got.Created == 0 {
		t.Errorf("object, model, created = %q, %q, %d", got.Object, got.Model, got.Created)
	}
	if len(got.Choices) != 1 {
		t.Fatalf("got %d choices, want 1", len(got.Choices))
	}
	c := got.Choices[0]
	if want := wantReply("hello there"); c.Message.Content != want {
		t.Errorf("content = %q, want %q", c.Message.Content, want)
	}
	if c.Message.Role != "assistant" || c.FinishReason != "stop" {
		t.Errorf("role, finish_reason = %q, %q, want assistant, stop", c.Message.Role, c.FinishReason)
	}
	wantCompletion := int64(countTokens(wantReply("hello there")))
	if u := got.Usage; u.PromptTokens != 4 || u.CompletionTokens != wantCompletion || u.TotalTokens != 4+wantCompletion {
		t.Errorf("usage = %d/%d/%d, want 4/%d/%d", u.PromptTokens, u.CompletionTokens, u.TotalTokens,
			wantCompletion, 4+wantCompletion)
	}
	checkAPIHeaders(t, res.Header)
}

// checkAPIHeaders asserts the headers real OpenAI answers carry.
func checkAPIHeaders(t *testing.T, h http.Header) {
	t.Helper()
	if v := h.Get("X-Request-Id"); !strings.HasPrefix(v, "req_") || len(v) != len("req_")+32 {
		t.Errorf("x-request-id = %q, want req_ + 32 hex", v)
	}
	for _, k := range []string{"Openai-Processing-Ms", "X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests"} {
		if h.Get(k) == "" {
			t.Errorf("header %s missing", k)
		}
	}
}

func TestChatCompletionShape(t *testing.T) {
	tests := []struct {
		name       string
		chunks     string // X-Test-Chunks
		maxTokens  int64
		want       string
		wantFinish string
	}{
		{name: "natural", want: wantReply("hi"), wantFinish: "stop"},
		{name: "max_tokens", maxTokens: 3, want: "You said: hi.", wantFinish: "length"},
		{name: "chunks cycle", chunks: "14", want: wantReply("hi") + " You said:", wantFinish: "stop"},
		{name: "chunks then max_tokens", chunks: "40", maxTokens: 2, want: "You said:", wantFinish: "length"},
	}
	_, _, client := newUpstream(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := openai.ChatCompletionNewParams{
				Model:    "airlock-test-1",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
			}
			if tt.maxTokens > 0 {
				p.MaxCompletionTokens = openai.Int(tt.maxTokens)
			}
			var opts []option.RequestOption
			if tt.chunks != "" {
				opts = append(opts, option.WithHeader("X-Test-Chunks", tt.chunks))
			}
			got, err := client.Chat.Completions.New(context.Background(), p, opts...)
			if err != nil {
				t.Fatalf("chat completion: %v", err)
			}
			if c := got.Choices[0]; c.Message.Content != tt.want || c.FinishReason != tt.wantFinish {
				t.Errorf("got %q (%s), want %q (%s)", c.Message.Content, c.FinishReason, tt.want, tt.wantFinish)
			}
			if got.Usage.CompletionTokens != int64(countTokens(tt.want)) {
				t.Errorf("completion_tokens = %d, want %d", got.Usage.CompletionTokens, countTokens(tt.want))
			}
		})
	}
}

func TestChatStream(t *testing.T) {
	const interval = 10 * time.Millisecond
	_, _, client := newUpstream(t, Options{ChunkInterval: interval, StampEvents: true})
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:         "airlock-test-1",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream me")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}, option.WithHeader("X-Test-Chunks", "8"))
	defer stream.Close()

	var chunks []openai.ChatCompletionChunk
	var arrived []time.Time
	for stream.Next() {
		now := time.Now()
		c := stream.Current()
		chunks, arrived = append(chunks, c), append(arrived, now)
		var stamp int64
		if err := json.Unmarshal([]byte(c.JSON.ExtraFields["airlock_sent_unix_ns"].Raw()), &stamp); err != nil {
			t.Fatalf("chunk %d: airlock_sent_unix_ns: %v", len(chunks)-1, err)
		}
		if sent := time.Unix(0, stamp); sent.After(now) || now.Sub(sent) > time.Second {
			t.Errorf("chunk %d stamped %v, arrived %v", len(chunks)-1, sent, now)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	// role, 8 content, finish, usage
	if len(chunks) != 11 {
		t.Fatalf("got %d chunks, want 11", len(chunks))
	}
	if d := chunks[0].Choices[0].Delta; d.Role != "assistant" || d.Content != "" {
		t.Errorf("first delta = %+v, want role assistant, empty content", d)
	}
	var content strings.Builder
	for i, c := range chunks[1:9] {
		if c.Object != "chat.completion.chunk" || !strings.HasPrefix(c.ID, "chatcmpl-") || c.ID != chunks[0].ID {
			t.Errorf("chunk %d: object %q id %q", i+1, c.Object, c.ID)
		}
		content.WriteString(c.Choices[0].Delta.Content)
	}
	if want := "You said: stream me. The airlock test upstream"; content.String() != want {
		t.Errorf("content = %q, want %q", content.String(), want)
	}
	if fr := chunks[9].Choices[0].FinishReason; fr != "stop" {
		t.Errorf("finish_reason = %q, want stop", fr)
	}
	last := chunks[10]
	if len(last.Choices) != 0 || last.Usage.CompletionTokens != 8 || last.Usage.PromptTokens != 2 || last.Usage.TotalTokens != 10 {
		t.Errorf("usage chunk: %d choices, usage %+v", len(last.Choices), last.Usage)
	}
	if gap, min := arrived[len(arrived)-1].Sub(arrived[0]), time.Duration(len(arrived)-1)*interval/2; gap < min {
		t.Errorf("events spread over %v, want at least %v: they were not paced", gap, min)
	}
}

func TestChatStreamCancel(t *testing.T) {
	up, _, client := newUpstream(t, Options{ChunkInterval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "airlock-test-1",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("long")},
	}, option.WithHeader("X-Test-Chunks", "100000"))
	defer stream.Close()
	for range 3 {
		if !stream.Next() {
			t.Fatalf("stream ended early: %v", stream.Err())
		}
	}
	info := nextRequest(t, up, "/v1/chat/completions")
	cancel()
	waitCanceled(t, info, 200*time.Millisecond)
}

func TestChatStreamDieMidstream(t *testing.T) {
	_, _, client := newUpstream(t, Options{ChunkInterval: time.Millisecond})
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:    DieMidstreamModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("die")},
	})
	defer stream.Close()
	n := 0
	for stream.Next() {
		n++
	}
	if stream.Err() == nil {
		t.Fatalf("stream ended cleanly after %d chunks, want an error", n)
	}
	if n != dieAfter {
		t.Errorf("got %d chunks before the abort, want %d", n, dieAfter)
	}
}

func TestChatDieMidstreamJSON(t *testing.T) {
	_, _, client := newUpstream(t, Options{})
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    DieMidstreamModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("die")},
	})
	if err == nil {
		t.Fatal("got a completion, want an error from the truncated body")
	}
}

func TestCompletions(t *testing.T) {
	_, _, client := newUpstream(t, Options{ChunkInterval: time.Millisecond})
	got, err := client.Completions.New(context.Background(), openai.CompletionNewParams{
		Model:  "airlock-test-1",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("say this")},
	})
	if err != nil {
		t.Fatalf("completion: %v", err)
	}
	if want := wantReply("say this"); got.Choices[0].Text != want || got.Object != "text_completion" {
		t.Errorf("got %q (%s), want %q", got.Choices[0].Text, got.Object, want)
	}

	stream := client.Completions.NewStreaming(context.Background(), openai.CompletionNewParams{
		Model:         "airlock-test-1",
		Prompt:        openai.CompletionNewParamsPromptUnion{OfString: openai.String("say this")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	defer stream.Close()
	var text strings.Builder
	var usage openai.CompletionUsage
	for stream.Next() {
		c := stream.Current()
		if len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Text)
		} else {
			usage = c.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if want := wantReply("say this"); text.String() != want {
		t.Errorf("streamed %q, want %q", text.String(), want)
	}
	if usage.PromptTokens != 2 || usage.CompletionTokens != int64(countTokens(text.String())) {
		t.Errorf("usage = %+v", usage)
	}
}

func TestEmbeddings(t *testing.T) {
	_, _, client := newUpstream(t, Options{})
	tests := []struct {
		name     string
		input    openai.EmbeddingNewParamsInputUnion
		dims     int64
		format   openai.EmbeddingNewParamsEncodingFormat
		want     []string
		wantDims int
	}{
		{name: "string", input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello")},
			want: []string{"hello"}, wantDims: DefaultEmbeddingDimensions},
		{name: "strings float", input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a b", "c"}},
			dims: 16, format: openai.EmbeddingNewParamsEncodingFormatFloat, want: []string{"a b", "c"}, wantDims: 16},
		{name: "strings base64", input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a b", "c"}},
			dims: 16, format: openai.EmbeddingNewParamsEncodingFormatBase64, want: []string{"a b", "c"}, wantDims: 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := openai.EmbeddingNewParams{Input: tt.input, Model: "text-embedding-3-small", EncodingFormat: tt.format}
			if tt.dims > 0 {
				p.Dimensions = openai.Int(tt.dims)
			}
			got, err := client.Embeddings.New(context.Background(), p)
			if err != nil {
				t.Fatalf("embeddings: %v", err)
			}
			if len(got.Data) != len(tt.want) {
				t.Fatalf("got %d embeddings, want %d", len(got.Data), len(tt.want))
			}
			tokens := 0
			for i, in := range tt.want {
				tokens += countTokens(in)
				want := Embed(in, tt.wantDims)
				e := got.Data[i].Embedding
				if len(e) != tt.wantDims || got.Data[i].Index != int64(i) {
					t.Fatalf("embedding %d: %d dims, index %d; want %d dims", i, len(e), got.Data[i].Index, tt.wantDims)
				}
				for j := range e {
					if float32(e[j]) != want[j] {
						t.Fatalf("embedding %d[%d] = %v, want %v", i, j, e[j], want[j])
					}
				}
			}
			if got.Usage.PromptTokens != int64(tokens) || got.Usage.TotalTokens != int64(tokens) {
				t.Errorf("usage = %+v, want %d tokens", got.Usage, tokens)
			}
		})
	}
}

func TestModels(t *testing.T) {
	_, _, client := newUpstream(t, Options{})
	page, err := client.Models.List(context.Background())
	if err != nil {
		t.Fatalf("list models: %v", err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.OwnedBy != "airlock" || m.Created == 0 {
			t.Errorf("model %+v", m)
		}
	}
	if strings.Join(ids, ",") != strings.Join(Models, ",") {
		t.Errorf("models = %v, want %v", ids, Models)
	}
	m, err := client.Models.Get(context.Background(), "gpt-4o-mini")
	if err != nil || m.ID != "gpt-4o-mini" {
		t.Fatalf("get model: %v, %v", m, err)
	}
	_, err = client.Models.Get(context.Background(), "no-such-model")
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "model_not_found" {
		t.Errorf("get unknown model: %v, want 404 model_not_found", err)
	}
}

func TestTranscription(t *testing.T) {
	_, _, client := newUpstream(t, Options{})
	audio := bytes.Repeat([]byte("RIFF"), 25000)
	got, err := client.Audio.Transcriptions.New(context.Background(), openai.AudioTranscriptionNewParams{
		File:  openai.File(bytes.NewReader(audio), "speech.wav", "audio/wav"),
		Model: openai.AudioModelGPTTranscribe,
	})
	if err != nil {
		t.Fatalf("transcription: %v", err)
	}
	if want := TranscriptionText(int64(len(audio)), "speech.wav"); got.Text != want {
		t.Errorf("text = %q, want %q", got.Text, want)
	}
}

func TestFiles(t *testing.T) {
	_, _, client := newUpstream(t, Options{})
	ctx := context.Background()
	data := bytes.Repeat([]byte(`{"custom_id":"1"}`+"\n"), 1000)
	f, err := client.Files.New(ctx, openai.FileNewParams{
		File:    openai.File(bytes.NewReader(data), "batch.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch,
	})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if !strings.HasPrefix(f.ID, "file-") || f.Bytes != int64(len(data)) || f.Filename != "batch.jsonl" ||
		f.Purpose != "batch" || f.CreatedAt == 0 {
		t.Errorf("uploaded file = %+v", f)
	}
	got, err := client.Files.Get(ctx, f.ID)
	if err != nil || got.ID != f.ID || got.Bytes != f.Bytes {
		t.Errorf("get file: %+v, %v", got, err)
	}
	page, err := client.Files.List(ctx, openai.FileListParams{})
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != f.ID {
		t.Errorf("list files: %+v, %v", page, err)
	}
	if _, err := client.Files.Delete(ctx, f.ID); err != nil {
		t.Errorf("delete file: %v", err)
	}
	_, err = client.Files.Get(ctx, f.ID)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Errorf("get deleted file: %v, want 404", err)
	}
}

func TestWrongKey(t *testing.T) {
	_, srv, _ := newUpstream(t, Options{})
	client := openai.NewClient(
		option.WithBaseURL(srv.URL+"/v1/"),
		option.WithAPIKey("sk-wrong"),
		option.WithHTTPClient(srv.Client()),
		option.WithMaxRetries(0),
	)
	_, err := client.Models.List(context.Background())
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got %v, want *openai.Error", err)
	}
	if apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != "invalid_api_key" || apiErr.Type != "invalid_request_error" {
		t.Errorf("got %d %s %s, want 401 invalid_request_error invalid_api_key", apiErr.StatusCode, apiErr.Type, apiErr.Code)
	}
	if strings.Contains(apiErr.Message, "sk-wrong") {
		t.Errorf("error message echoes the key: %q", apiErr.Message)
	}
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name   string
		opts   Options
		header string
		value  string
		want   int
	}{
		{name: "no key configured", opts: Options{}, want: http.StatusOK},
		{name: "bearer ok", opts: Options{APIKey: "k1"}, header: "Authorization", value: "Bearer k1", want: http.StatusOK},
		{name: "bearer lower-case scheme", opts: Options{APIKey: "k1"}, header: "Authorization", value: "bearer k1", want: http.StatusOK},
		{name: "bearer wrong", opts: Options{APIKey: "k1"}, header: "Authorization", value: "Bearer k2", want: http.StatusUnauthorized},
		{name: "bearer missing", opts: Options{APIKey: "k1"}, want: http.StatusUnauthorized},
		{name: "bearer sent as api-key", opts: Options{APIKey: "k1"}, header: "Api-Key", value: "k1", want: http.StatusUnauthorized},
		{name: "api-key ok", opts: Options{APIKey: "k1", Auth: "api-key"}, header: "Api-Key", value: "k1", want: http.StatusOK},
		{name: "api-key wrong", opts: Options{APIKey: "k1", Auth: "api-key"}, header: "Api-Key", value: "k2", want: http.StatusUnauthorized},
		{name: "api-key sent as bearer", opts: Options{APIKey: "k1", Auth: "api-key"}, header: "Authorization", value: "Bearer k1", want: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(New(tt.opts))
			defer srv.Close()
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/models", nil)
			if tt.header != "" {
				req.Header.Set(tt.header, tt.value)
			}
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != tt.want {
				t.Fatalf("got %d, want %d", res.StatusCode, tt.want)
			}
			checkAPIHeaders(t, res.Header)
			if tt.want == http.StatusUnauthorized {
				checkErrorBody(t, res, "invalid_request_error", "invalid_api_key")
			}
		})
	}
}

// checkErrorBody asserts res carries an OpenAI error JSON of typ and code
// ("" = null) with a null param, unless param is given.
func checkErrorBody(t *testing.T, res *http.Response, typ, code string) {
	t.Helper()
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Error map[string]any `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("error body: %v", err)
	}
	e := body.Error
	if e["type"] != typ || e["message"] == "" {
		t.Errorf("error = %v, want type %s", e, typ)
	}
	wantCode := any(code)
	if code == "" {
		wantCode = nil
	}
	if c, ok := e["code"]; !ok || c != wantCode {
		t.Errorf("code = %v, want %v", e["code"], wantCode)
	}
	if _, ok := e["param"]; !ok {
		t.Errorf("error has no param member: %v", e)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		header   map[string]string
		want     int
		wantType string
		wantCode string
	}{
		{name: "bad json", method: "POST", path: "/v1/chat/completions", body: "{nope", want: 400, wantType: "invalid_request_error"},
		{name: "no model", method: "POST", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":"x"}]}`, want: 400, wantType: "invalid_request_error"},
		{name: "no messages", method: "POST", path: "/v1/chat/completions", body: `{"model":"m"}`, want: 400, wantType: "invalid_request_error"},
		{name: "bad chunks", method: "POST", path: "/v1/chat/completions", body: `{"model":"m","messages":[{"role":"user","content":"x"}]}`,
			header: map[string]string{"X-Test-Chunks": "zero"}, want: 400, wantType: "invalid_request_error"},
		{name: "bad embedding format", method: "POST", path: "/v1/embeddings", body: `{"model":"m","input":"x","encoding_format":"hex"}`, want: 400, wantType: "invalid_request_error"},
		{name: "unknown path", method: "GET", path: "/v1/nothing/here", want: 404, wantType: "invalid_request_error", wantCode: "not_found"},
		{name: "outside v1", method: "GET", path: "/models", want: 404, wantType: "invalid_request_error", wantCode: "not_found"},
		{name: "wrong method", method: "GET", path: "/v1/chat/completions", want: 405, wantType: "invalid_request_error", wantCode: "method_not_allowed"},
		{name: "not multipart", method: "POST", path: "/v1/files", body: "{}", want: 400, wantType: "invalid_request_error"},
		{name: "test status 503", method: "GET", path: "/v1/models", header: map[string]string{"X-Test-Status": "503"}, want: 503, wantType: "server_error", wantCode: "test_status"},
		{name: "test status 429", method: "GET", path: "/v1/models", header: map[string]string{"X-Test-Status": "429"}, want: 429, wantType: "rate_limit_error", wantCode: "test_status"},
	}
	srv := httptest.NewServer(New(Options{}))
	defer srv.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != tt.want {
				t.Fatalf("got %d, want %d", res.StatusCode, tt.want)
			}
			checkAPIHeaders(t, res.Header)
			if tt.want == 405 && res.Header.Get("Allow") != "POST" {
				t.Errorf("Allow = %q, want POST", res.Header.Get("Allow"))
			}
			checkErrorBody(t, res, tt.wantType, tt.wantCode)
		})
	}
}

func TestDelay(t *testing.T) {
	up, srv, _ := newUpstream(t, Options{APIKey: "-"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer -")
	req.Header.Set("X-Test-Delay", "1h")
	errc := make(chan error, 1)
	go func() {
		res, err := srv.Client().Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	info := nextRequest(t, up, "/v1/models")
	cancel()
	waitCanceled(t, info, 200*time.Millisecond)
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client got %v, want context.Canceled", err)
	}
}

func TestRequestsNeverBlock(t *testing.T) {
	up := New(Options{})
	for i := range requestsBuffer + 10 {
		rec := httptest.NewRecorder()
		up.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/models", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d: got %d, want 200", i, rec.Code)
		}
	}
	if got := len(up.Requests()); got != requestsBuffer {
		t.Fatalf("got %d queued reports, want %d", got, requestsBuffer)
	}
	info := <-up.Requests()
	select {
	case <-info.Done:
	default:
		t.Fatal("Done still open after the handler returned")
	}
	if info.Canceled() {
		t.Error("Canceled() = true for a request that completed")
	}
	if info.Method != http.MethodGet || info.Path != "/v1/models" {
		t.Errorf("got %s %s, want GET /v1/models", info.Method, info.Path)
	}
}

func TestRateLimitHeaders(t *testing.T) {
	up := New(Options{})
	var prev int
	for i := range 3 {
		rec := httptest.NewRecorder()
		up.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/models", nil))
		if got := rec.Header().Get("X-Ratelimit-Limit-Requests"); got != "10000" {
			t.Errorf("limit = %q, want 10000", got)
		}
		var remaining int
		if err := json.Unmarshal([]byte(rec.Header().Get("X-Ratelimit-Remaining-Requests")), &remaining); err != nil {
			t.Fatal(err)
		}
		if i > 0 && remaining != prev-1 {
			t.Errorf("remaining = %d after %d, want %d", remaining, prev, prev-1)
		}
		prev = remaining
	}
}
