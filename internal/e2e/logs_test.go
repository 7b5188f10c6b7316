package e2e

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/airlock-proxy/airlock/internal/testkit/devstack"
	"github.com/airlock-proxy/airlock/internal/testkit/testlog"
)

// TestLogsCarryNoKeysOrBodies: with every component logging at debug level,
// no line holds a key (client or upstream: both start sk-airlock- here) or
// any part of a request or response body, and the edge writes one access
// line per request with the fields an operator needs.
func TestLogsCarryNoKeysOrBodies(t *testing.T) {
	logs := &testlog.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const secret = "zebra-octopus-7731"
	c := sdk(st, st.ClientKey)
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("tell nobody " + secret)},
	}
	resp, err := c.Chat.Completions.New(testCtx(t), params)
	if err != nil || !strings.Contains(resp.Choices[0].Message.Content, secret) {
		t.Fatalf("chat: %v", err)
	}
	stream := c.Chat.Completions.NewStreaming(testCtx(t), params)
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	st.Close()

	all := logs.String()
	for _, leak := range []string{"sk-airlock-", secret, "tell nobody"} {
		if strings.Contains(all, leak) {
			t.Errorf("the logs contain %q", leak)
		}
	}
	var access []map[string]any
	for _, l := range logs.Lines(t) {
		if l["role"] == "edge" && l["msg"] == "request" {
			access = append(access, l)
		}
	}
	if len(access) != 2 {
		t.Fatalf("%d access lines, want 2 (one per request)", len(access))
	}
	for _, l := range access {
		for _, field := range []string{"request_id", "client", "route", "upstream", "status", "bytes_in", "bytes_out", "duration", "ttfb", "end", "transport", "relay"} {
			if _, ok := l[field]; !ok {
				t.Errorf("access line lacks %q: %v", field, l)
			}
		}
		if l["route"] != "chat" || l["end"] != "complete" || l["transport"] != "quic" {
			t.Errorf("access line %v, want route chat, end complete, transport quic", l)
		}
	}
}
