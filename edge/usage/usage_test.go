package usage

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const (
	ctJSON = "application/json"
	ctSSE  = "text/event-stream"
)

// Bodies as the APIs send them (after the examples in OpenAI's OpenAPI
// description, made valid JSON).
const (
	chatJSON = `{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {
      "cached_tokens": 0,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default"
}
`

	completionJSON = `{
  "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
  "object": "text_completion",
  "created": 1589478378,
  "model": "gpt-3.5-turbo-instruct",
  "system_fingerprint": "fp_44709d6fcb",
  "choices": [
    {
      "text": "\n\nThis is indeed a test",
      "index": 0,
      "logprobs": null,
      "finish_reason": "length"
    }
  ],
  "usage": {
    "prompt_tokens": 5,
    "completion_tokens": 7,
    "total_tokens": 12
  }
}`

	embeddingJSON = `{
  "object": "list",
  "data": [
    {
      "object": "embedding",
      "embedding": [
        0.0023064255,
        -0.009327292,
        -0.0028842222
      ],
      "index": 0
    }
  ],
  "model": "text-embedding-ada-002",
  "usage": {
    "prompt_tokens": 8,
    "total_tokens": 8
  }
}`

	responseJSON = `{
  "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  "object": "response",
  "created_at": 1741476542,
  "status": "completed",
  "error": null,
  "incomplete_details": null,
  "instructions": null,
  "max_output_tokens": null,
  "model": "gpt-4.1-2025-04-14",
  "output": [
    {
      "type": "message",
      "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
      "status": "completed",
      "role": "assistant",
      "content": [
        {
          "type": "output_text",
          "text": "In a peaceful grove beneath a silver moon, a unicorn named Lumina discovered a hidden pool that reflected the stars.",
          "annotations": []
        }
      ]
    }
  ],
  "parallel_tool_calls": true,
  "previous_response_id": null,
  "reasoning": {"effort": null, "summary": null},
  "store": true,
  "temperature": 1.0,
  "text": {"format": {"type": "text"}},
  "tool_choice": "auto",
  "tools": [],
  "top_p": 1.0,
  "truncation": "disabled",
  "usage": {
    "input_tokens": 36,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 87,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 123
  },
  "user": null,
  "metadata": {}
}`

	imageJSON = `{"created":1713833628,"data":[{"b64_json":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}],"usage":{"total_tokens":100,"input_tokens":50,"output_tokens":50,"input_tokens_details":{"text_tokens":10,"image_tokens":40}}}`

	chatChunkStart = `{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}`
	chatChunkHello = `{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}`
	chatChunkStop  = `{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}`
	chatChunkUsage = `{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}`
)

// sse returns the events with the given data, each its own "data: " line.
func sse(data ...string) string {
	var b strings.Builder
	for _, d := range data {
		b.WriteString("data: " + d + "\n\n")
	}
	return b.String()
}

var (
	chatSSEBeforeUsage = sse(chatChunkStart, chatChunkHello, chatChunkStop)
	chatSSE            = chatSSEBeforeUsage + sse(chatChunkUsage, "[DONE]")

	completionSSE = sse(
		`{"id":"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe","object":"text_completion","created":1690759702,"choices":[{"text":"This","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct","system_fingerprint":"fp_44709d6fcb"}`,
		`{"id":"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe","object":"text_completion","created":1690759702,"choices":[],"model":"gpt-3.5-turbo-instruct","system_fingerprint":"fp_44709d6fcb","usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`,
		"[DONE]")

	// Some OpenAI-compatible servers put the usage on the last content
	// chunk, and some (vLLM's continuous_usage_stats) on every chunk.
	chatSSEUsageOnLastChunk = sse(chatChunkStart,
		`{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"llama-3.1-8b","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}`,
		"[DONE]")
	chatSSEContinuousUsage = sse(
		`{"id":"c","object":"chat.completion.chunk","model":"qwen","choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}}`,
		`{"id":"c","object":"chat.completion.chunk","model":"qwen","choices":[{"index":0,"delta":{"content":"b"}}],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}`,
		`{"id":"c","object":"chat.completion.chunk","model":"qwen","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}`,
		"[DONE]")

	// Field variants: comments, "data:" without a space, id and retry
	// fields, an event whose data spans several lines.
	chatSSEVariants = ": OPENROUTER PROCESSING\n\nretry: 3000\nid: 1\ndata:" + chatChunkStart + "\n\n: keep-alive\n" +
		"data: " + chatChunkHello + "\n\n" +
		"id: 2\ndata: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\n" +
		"data:  \"model\":\"gpt-4o-mini\",\"choices\":[],\n" +
		"data:\n" +
		"data: \"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n" +
		"data: [DONE]\n\n"

	responsesSSEBeforeEnd = `event: response.created
data: {"type":"response.created","response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"in_progress","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}}

event: response.in_progress
data: {"type":"response.in_progress","response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"in_progress","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}}

event: response.output_item.added
data: {"type":"response.output_item.added","output_index":0,"item":{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"in_progress","role":"assistant","content":[]}}

event: response.content_part.added
data: {"type":"response.content_part.added","item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}

event: response.output_text.delta
data: {"type":"response.output_text.delta","item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"delta":"Hi"}

event: response.output_text.done
data: {"type":"response.output_text.done","item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"text":"Hi there! How can I assist you today?"}

event: response.content_part.done
data: {"type":"response.content_part.done","item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"part":{"type":"output_text","text":"Hi there! How can I assist you today?","annotations":[]}}

event: response.output_item.done
data: {"type":"response.output_item.done","output_index":0,"item":{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there! How can I assist you today?","annotations":[]}]}}

`
	responsesSSE = responsesSSEBeforeEnd + `event: response.completed
data: {"type":"response.completed","response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"completed","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there! How can I assist you today?","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":37,"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48},"user":null,"metadata":{}}}

`
	responsesSSEIncomplete = responsesSSEBeforeEnd + `event: response.incomplete
data: {"type":"response.incomplete","sequence_number":9,"response":{"id":"resp_1","object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-4.1-2025-04-14","output":[],"usage":{"input_tokens":37,"output_tokens":16,"total_tokens":53}}}

`
	// The type comes after the response here: member order is not fixed.
	responsesSSEFailed = responsesSSEBeforeEnd + `event: response.failed
data: {"response":{"id":"resp_1","object":"response","status":"failed","error":{"code":"server_error","message":"The model failed to generate a response."},"model":"gpt-4.1-2025-04-14","output":[],"usage":{"input_tokens":37,"output_tokens":0,"total_tokens":37}},"sequence_number":9,"type":"response.failed"}

`
	transcriptionSSE = sse(
		`{"type":"transcript.text.delta","delta":"I","logprobs":[{"token":"I","logprob":-0.00007588794,"bytes":[73]}]}`,
		`{"type":"transcript.text.done","text":"I see skies of blue.","usage":{"input_tokens":14,"input_token_details":{"text_tokens":0,"audio_tokens":14},"output_tokens":45,"total_tokens":59}}`)

	// Decoys: "usage" and "model" in strings, in tool call arguments, in
	// nested objects, in longer member names, and as a value.
	decoyJSON = `{
  "id": "chatcmpl-decoy\\",
  "object": "usage",
  "created": 1741569952,
  "model": "gpt-4o",
  "modelx": "evil",
  "usage_details": {"prompt_tokens": 111},
  "response_format": {"usage": {"prompt_tokens": 222}},
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Sure: {\"model\": \"evil\", \"usage\": {\"prompt_tokens\": 999}} \\\" \"usage\": {",
        "tool_calls": [
          {
            "id": "call_abc",
            "type": "function",
            "function": {
              "name": "report",
              "arguments": "{\"usage\":{\"prompt_tokens\":777,\"total_tokens\":777},\"model\":\"evil\"}"
            }
          }
        ],
        "usage": {"prompt_tokens": 555, "completion_tokens": 555, "total_tokens": 1110},
        "model": "evil"
      },
      "finish_reason": "tool_calls"
    }
  ],
  "metadata": {"usage": {"prompt_tokens": 444}, "model": "evil", "response": {"usage": {"prompt_tokens": 333}}},
  "response": {"model": "evil", "usage": {"prompt_tokens": 666, "total_tokens": 666}},
  "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
}`
	decoyJSONNoUsage = `{"model":"gpt-4o","choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":1}","usage":{"prompt_tokens":2}}}],"x":{"usage":{"prompt_tokens":3}}}`

	decoySSE = sse(
		`{"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"data: {\"usage\":{\"prompt_tokens\":999}}\n\n"}}],"usage":null}`,
		`{"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"usage\": {\"prompt_tokens\": 9}}"}}]}}],"usage":null}`,
		`{"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":888}}],"usage":null}`,
		"[DONE]")
	decoyResponsesSSE = `event: response.in_progress
data: {"type":"response.in_progress","response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-4.1","output":[],"usage":{"input_tokens":1,"output_tokens":0,"total_tokens":1}}}

event: response.output_item.done
data: {"type":"response.output_item.done","output_index":0,"item":{"id":"fc_1","type":"function_call","status":"completed","arguments":"{\"usage\":{\"input_tokens\":999}}","call_id":"call_1","name":"f","usage":{"input_tokens":888},"response":{"usage":{"input_tokens":777}}}}

`
	// Broken events do not stop the meter from finding later ones.
	brokenSSE = "data: not json\n\ndata: {\"model\":\"m1\",\"usage\":{\"prompt_tokens\":5}\n\n" +
		"data: {\"model\":\"m2\",\"usage\":{\"prompt_tokens\" 1}}\n\n" +
		"data: {\"model\":\"m3\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}} garbage\n\n" +
		"data: {\"model\":\"m4\",\"usage\":{\"prompt_tokens\":7}]\n\n" +
		"data: {\"model\":\"m5\",,\"usage\":{\"prompt_tokens\":8}}\n\n" +
		"data: [DONE]\n\n"

	escapesJSON = `{"id":"a\\","x":"\\\\\"usage\":{","model":"m\"x\u00e9","y":["]}\"{"],"usage":{"prompt_tokens":1,"completion_tokens":1,"note":"}\\\"}"}}`
)

type testCase struct {
	name  string
	ct    string
	body  string
	want  Usage
	ok    bool
	noCRs bool // do not try the body with CR or CRLF line ends
}

var cases = []testCase{
	{name: "chat", ct: ctJSON, body: chatJSON, want: Usage{"gpt-4o-2024-08-06", 19, 10, 29}, ok: true},
	{name: "chat with params", ct: "application/json; charset=utf-8", body: chatJSON, want: Usage{"gpt-4o-2024-08-06", 19, 10, 29}, ok: true},
	{name: "completion", ct: ctJSON, body: completionJSON, want: Usage{"gpt-3.5-turbo-instruct", 5, 7, 12}, ok: true},
	{name: "embedding", ct: ctJSON, body: embeddingJSON, want: Usage{"text-embedding-ada-002", 8, 0, 8}, ok: true},
	{name: "response", ct: ctJSON, body: responseJSON, want: Usage{"gpt-4.1-2025-04-14", 36, 87, 123}, ok: true},
	{name: "image", ct: ctJSON, body: imageJSON, want: Usage{"", 50, 50, 100}, ok: true},
	{name: "no total", ct: ctJSON, body: `{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4}}`, want: Usage{"m", 3, 4, 7}, ok: true},
	{name: "escapes", ct: ctJSON, body: escapesJSON, want: Usage{"m\"xé", 1, 1, 2}, ok: true},
	{name: "decoys", ct: ctJSON, body: decoyJSON, want: Usage{"gpt-4o", 82, 17, 99}, ok: true},
	{name: "decoys only", ct: ctJSON, body: decoyJSONNoUsage, want: Usage{Model: "gpt-4o"}},
	{name: "cut before usage", ct: ctJSON, body: chatJSON[:strings.Index(chatJSON, `"usage"`)], want: Usage{Model: "gpt-4o-2024-08-06"}},
	{name: "cut in usage", ct: ctJSON, body: chatJSON[:strings.Index(chatJSON, `"total_tokens"`)], want: Usage{Model: "gpt-4o-2024-08-06"}},
	{name: "usage too large", ct: ctJSON, body: `{"model":"m","usage":{"prompt_tokens":1,"note":"` + strings.Repeat("x", 5000) + `"}}`, want: Usage{Model: "m"}},
	{name: "duration usage", ct: ctJSON, body: `{"text":"Hello.","usage":{"type":"duration","seconds":3}}`},
	{name: "error", ct: ctJSON, body: `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`},
	{name: "array", ct: ctJSON, body: `[{"model":"m","usage":{"prompt_tokens":1}}]`},

	{name: "chat stream", ct: ctSSE, body: chatSSE, want: Usage{"gpt-4o-mini", 9, 2, 11}, ok: true},
	{name: "chat stream with params", ct: "Text/Event-Stream; charset=utf-8", body: chatSSE, want: Usage{"gpt-4o-mini", 9, 2, 11}, ok: true},
	{name: "completion stream", ct: ctSSE, body: completionSSE, want: Usage{"gpt-3.5-turbo-instruct", 5, 1, 6}, ok: true},
	{name: "usage on last chunk", ct: ctSSE, body: chatSSEUsageOnLastChunk, want: Usage{"llama-3.1-8b", 12, 1, 13}, ok: true},
	{name: "usage on every chunk", ct: ctSSE, body: chatSSEContinuousUsage, want: Usage{"qwen", 4, 3, 7}, ok: true},
	{name: "field variants", ct: ctSSE, body: chatSSEVariants, want: Usage{"gpt-4o-mini", 9, 2, 11}, ok: true},
	{name: "responses stream", ct: ctSSE, body: responsesSSE, want: Usage{"gpt-4.1-2025-04-14", 37, 11, 48}, ok: true},
	{name: "responses incomplete", ct: ctSSE, body: responsesSSEIncomplete, want: Usage{"gpt-4.1-2025-04-14", 37, 16, 53}, ok: true},
	{name: "responses failed", ct: ctSSE, body: responsesSSEFailed, want: Usage{"gpt-4.1-2025-04-14", 37, 0, 37}, ok: true},
	{name: "transcription stream", ct: ctSSE, body: transcriptionSSE, want: Usage{"", 14, 45, 59}, ok: true},
	{name: "stream decoys", ct: ctSSE, body: decoySSE, want: Usage{Model: "gpt-4o-mini"}},
	{name: "responses stream decoys", ct: ctSSE, body: decoyResponsesSSE, want: Usage{Model: "gpt-4.1"}},
	{name: "broken events", ct: ctSSE, body: brokenSSE, want: Usage{"m3", 1, 2, 3}, ok: true},
	{name: "stream cut before usage", ct: ctSSE, body: chatSSEBeforeUsage, want: Usage{Model: "gpt-4o-mini"}},
	{name: "stream cut in usage", ct: ctSSE, body: chatSSEBeforeUsage + "data: " + chatChunkUsage[:len(chatChunkUsage)-40], want: Usage{Model: "gpt-4o-mini"}},
	{name: "stream cut before blank line", ct: ctSSE, body: chatSSEBeforeUsage + "data: " + chatChunkUsage + "\n", want: Usage{Model: "gpt-4o-mini"}},
	{name: "responses stream cut", ct: ctSSE, body: responsesSSEBeforeEnd, want: Usage{Model: "gpt-4.1-2025-04-14"}},
	{name: "event stream with CR in data", ct: ctSSE, body: "data: {\"model\":\"a\r\"usage\":{\"prompt_tokens\":1}}\n\n", noCRs: true},

	{name: "sniff JSON", body: " \r\n\t" + chatJSON, want: Usage{"gpt-4o-2024-08-06", 19, 10, 29}, ok: true},
	{name: "sniff event", body: responsesSSE, want: Usage{"gpt-4.1-2025-04-14", 37, 11, 48}, ok: true},
	{name: "sniff comment", body: ": hi\n\n" + chatSSE, want: Usage{"gpt-4o-mini", 9, 2, 11}, ok: true},
	{name: "sniff binary", body: "\x89PNG\r\n\x1a\n" + chatJSON},
	{name: "sniff near miss", body: "dat " + chatSSE},
	{name: "audio", ct: "audio/mpeg", body: chatJSON},
	{name: "text", ct: "text/plain", body: chatSSE},
}

// feed runs a meter of content type ct over chunks and returns its result.
func feed(t testing.TB, ct string, chunks [][]byte) (Usage, bool) {
	m := NewMeter(ct)
	for _, c := range chunks {
		if n, err := m.Write(c); n != len(c) || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", len(c), n, err)
		}
	}
	return m.Result()
}

// randomChunks splits body into chunks of 1 to max bytes, drawn from seed.
func randomChunks(body []byte, seed uint64, max int) [][]byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	var chunks [][]byte
	for len(body) > 0 {
		n := min(len(body), 1+rng.IntN(max))
		chunks = append(chunks, body[:n])
		body = body[n:]
	}
	return chunks
}

// splits returns body whole, byte by byte, and in a few random chunkings.
func splits(body []byte) map[string][][]byte {
	s := map[string][][]byte{
		"whole":       {body},
		"byte":        slices.Collect(slices.Chunk(body, 1)),
		"random 1-8":  randomChunks(body, 1, 8),
		"random 1-64": randomChunks(body, 2, 64),
		"random 1-1K": randomChunks(body, 3, 1024),
	}
	if len(body) == 0 {
		s["byte"] = nil
	}
	return s
}

// variants returns the content types and bodies a case is run with: also
// without a content type where the meter sniffs the same, and for event
// streams with CRLF and CR line ends.
func variants(tc testCase) map[string][2]string {
	v := map[string][2]string{"": {tc.ct, tc.body}}
	if tc.ct == ctJSON || tc.ct == ctSSE {
		v["sniffed"] = [2]string{"", tc.body}
	}
	if kindFor(tc.ct) == kindSSE && !tc.noCRs {
		v["CRLF"] = [2]string{tc.ct, strings.ReplaceAll(tc.body, "\n", "\r\n")}
		v["CR"] = [2]string{tc.ct, strings.ReplaceAll(tc.body, "\n", "\r")}
	}
	return v
}

func TestMeter(t *testing.T) {
	for _, tc := range cases {
		for vname, v := range variants(tc) {
			for sname, chunks := range splits([]byte(v[1])) {
				got, ok := feed(t, v[0], chunks)
				if got != tc.want || ok != tc.ok {
					t.Errorf("%s %s %s: Result() = %+v, %v; want %+v, %v", tc.name, vname, sname, got, ok, tc.want, tc.ok)
				}
			}
		}
	}
}

func TestResultWhileStreaming(t *testing.T) {
	m := NewMeter(ctSSE)
	if u, ok := m.Result(); ok || u != (Usage{}) {
		t.Errorf("before any data: %+v, %v", u, ok)
	}
	m.Write([]byte(chatSSEBeforeUsage))
	if u, ok := m.Result(); ok || u.Model != "gpt-4o-mini" {
		t.Errorf("before usage: %+v, %v", u, ok)
	}
	m.Write([]byte(sse(chatChunkUsage)))
	for range 2 {
		if u, ok := m.Result(); !ok || u != (Usage{"gpt-4o-mini", 9, 2, 11}) {
			t.Errorf("after usage: %+v, %v", u, ok)
		}
	}
	m.Write([]byte(sse(`{"model":"other","usage":null}`, "[DONE]")))
	if u, ok := m.Result(); !ok || u != (Usage{"other", 9, 2, 11}) {
		t.Errorf("after null usage: %+v, %v", u, ok)
	}
}

// embeddingsBody returns an embeddings response of at least size bytes, with
// its usage at the end.
func embeddingsBody(size int) []byte {
	b := []byte(`{"object":"list","data":[`)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; len(b) < size; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"object":"embedding","index":%d,"embedding":[`, i)
		for j := range 1536 {
			if j > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, "%.10f", rng.Float64()*0.2-0.1)
		}
		b = append(b, "]}"...)
	}
	return append(b, `],"model":"text-embedding-3-small","usage":{"prompt_tokens":8000,"total_tokens":8000}}`...)
}

// base64Body returns an embeddings response with base64 vectors (what the
// SDKs ask for by default) of at least size bytes.
func base64Body(size int) []byte {
	b := []byte(`{"object":"list","data":[`)
	vector := strings.Repeat("qMwPvKrNE7yQ8ls8", 1536*4/16*4/3)
	for i := 0; len(b) < size; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"object":"embedding","index":%d,"embedding":"%s"}`, i, vector)
	}
	return append(b, `],"model":"text-embedding-3-small","usage":{"prompt_tokens":8000,"total_tokens":8000}}`...)
}

// sseWithLongLine returns a chat stream whose second event has a data line
// of more than size bytes, of which one string is most.
func sseWithLongLine(size int) []byte {
	args := strings.Repeat(`QUJD\"\\`, size/7)
	return []byte(sse(chatChunkStart,
		`{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"upload","arguments":"`+args+`"}}]},"finish_reason":null}],"usage":null}`,
		chatChunkUsage, "[DONE]"))
}

func TestLargeBodies(t *testing.T) {
	embeddings := Usage{"text-embedding-3-small", 8000, 0, 8000}
	chat := Usage{"gpt-4o-mini", 9, 2, 11}
	long := strings.Repeat("x", 2<<20)
	for _, tc := range []struct {
		name string
		ct   string
		body []byte
		want Usage
	}{
		{"5 MiB embeddings", ctJSON, embeddingsBody(5 << 20), embeddings},
		{"5 MiB base64 embeddings", ctJSON, base64Body(5 << 20), embeddings},
		{"2 MiB data line", ctSSE, sseWithLongLine(2 << 20), chat},
		{"2 MiB data line, not JSON", ctSSE, []byte("data: " + long + "\n\n" + chatSSE), chat},
		{"2 MiB comment", ctSSE, []byte(":" + long + "\n\n" + chatSSE), chat},
		{"2 MiB field name", ctSSE, []byte(long + ": x\n\n" + chatSSE), chat},
	} {
		for _, max := range []int{1 << 10, 16 << 10, 256 << 10} {
			var got Usage
			var ok bool
			var before, after runtime.MemStats
			chunks := randomChunks(tc.body, uint64(max), max)
			runtime.GC()
			runtime.ReadMemStats(&before)
			got, ok = feed(t, tc.ct, chunks)
			runtime.ReadMemStats(&after)
			if !ok || got != tc.want {
				t.Errorf("%s, chunks up to %d: Result() = %+v, %v; want %+v", tc.name, max, got, ok, tc.want)
			}
			// Allowance for the meter, the result and the runtime.
			if n := after.TotalAlloc - before.TotalAlloc; n > 32<<10 {
				t.Errorf("%s, chunks up to %d: allocated %d bytes for a %d-byte body", tc.name, max, n, len(tc.body))
			}
		}
	}
}

func TestWriteDoesNotAllocate(t *testing.T) {
	events := [][]byte{[]byte(sse(chatChunkStart)), []byte(sse(chatChunkHello)), []byte(sse(chatChunkStop))}
	m := NewMeter(ctSSE)
	m.Write([]byte(chatSSE))
	allocs := testing.AllocsPerRun(100, func() {
		for _, e := range events {
			m.Write(e)
		}
	})
	if allocs != 0 {
		t.Errorf("Write allocates %v times per run of %d events", allocs, len(events))
	}
	// An object that never ends, with top-level members copied again and
	// again, and nested decoys.
	chunk := []byte(`,"data":[{"embedding":"AAAA\"\\","usage":{"prompt_tokens":1}}],"usage":{"prompt_tokens":1},"model":"m"`)
	m = NewMeter(ctJSON)
	m.Write([]byte(`{"model":"m"`))
	m.Write(chunk)
	if allocs := testing.AllocsPerRun(100, func() { m.Write(chunk) }); allocs != 0 {
		t.Errorf("Write allocates %v times per JSON chunk", allocs)
	}
	m.Write([]byte("}"))
	if u, ok := m.Result(); !ok || u != (Usage{"m", 1, 0, 1}) {
		t.Errorf("Result() = %+v, %v", u, ok)
	}
}

func FuzzMeter(f *testing.F) {
	for _, tc := range cases {
		f.Add([]byte(tc.body), uint64(len(tc.body)))
	}
	f.Add([]byte("data:\r"), uint64(0))
	f.Add([]byte(`{"usage":{"a":"\\\"}"}}`), uint64(3))
	f.Fuzz(func(t *testing.T, body []byte, seed uint64) {
		for _, ct := range []string{ctJSON, ctSSE, ""} {
			want, wantOK := feed(t, ct, [][]byte{body})
			for _, chunks := range [][][]byte{randomChunks(body, seed, 1+int(seed%64)), slices.Collect(slices.Chunk(body, 1))} {
				if got, ok := feed(t, ct, chunks); got != want || ok != wantOK {
					t.Fatalf("%q: whole %+v, %v; in %d chunks %+v, %v", ct, want, wantOK, len(chunks), got, ok)
				}
			}
		}
	})
}

func BenchmarkMeter(b *testing.B) {
	var events [][]byte
	for i := range 99 {
		events = append(events, []byte(sse(strings.Replace(chatChunkHello, "Hello", fmt.Sprint("word ", i), 1))))
	}
	events = append(events, []byte(sse(chatChunkUsage)))
	for _, bc := range []struct {
		name   string
		ct     string
		chunks [][]byte
	}{
		{"SSE 100 events", ctSSE, events},
		{"JSON 1 MiB floats", ctJSON, slices.Collect(slices.Chunk(embeddingsBody(1<<20), 32<<10))},
		{"JSON 1 MiB base64", ctJSON, slices.Collect(slices.Chunk(base64Body(1<<20), 32<<10))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bytes.Join(bc.chunks, nil))))
			b.ReportAllocs()
			for b.Loop() {
				m := NewMeter(bc.ct)
				for _, c := range bc.chunks {
					m.Write(c)
				}
				if _, ok := m.Result(); !ok {
					b.Fatal("no usage")
				}
			}
		})
	}
}

// TestFinished: the API's own end of a body is recognised whatever the
// chunking, and nothing short of it counts.
func TestFinished(t *testing.T) {
	chat := "data: {\"model\":\"m\",\"choices\":[]}\n\ndata: [DONE]\n\n"
	responses := "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"m\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}}\n\n"
	for _, tt := range []struct {
		name, contentType, body string
		want                    bool
	}{
		{"chat stream", "text/event-stream", chat, true},
		{"chat stream, CRLF", "text/event-stream", strings.ReplaceAll(chat, "\n", "\r\n"), true},
		{"chat stream cut before [DONE]", "text/event-stream", chat[:strings.Index(chat, "data: [DONE]")], false},
		{"chat stream cut inside [DONE]", "text/event-stream", chat[:len(chat)-4], false},
		{"[DONE] not ended by a blank line", "text/event-stream", strings.TrimSuffix(chat, "\n"), false},
		{"data that only starts like [DONE]", "text/event-stream", "data: [DONE]x\n\n", false},
		{"[DONE] in two data lines", "text/event-stream", "data: [DO\ndata: NE]\n\n", false},
		{"responses stream", "text/event-stream", responses, true},
		{"responses delta only", "text/event-stream", "data: {\"type\":\"response.output_text.delta\",\"delta\":\"x\"}\n\n", false},
		{"JSON", "application/json", `{"model":"m","usage":{"prompt_tokens":1}}`, true},
		{"JSON cut", "application/json", `{"model":"m","usage":{"prompt_tokens":1}`, false},
		{"not metered", "audio/mpeg", "ID3", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{1, 3, len(tt.body)} {
				m := NewMeter(tt.contentType)
				for b := []byte(tt.body); len(b) > 0; {
					n := min(size, len(b))
					m.Write(b[:n])
					b = b[n:]
				}
				if got := m.Finished(); got != tt.want {
					t.Errorf("chunks of %d: Finished() = %v, want %v", size, got, tt.want)
				}
			}
		})
	}
}
