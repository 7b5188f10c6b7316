package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/airlock-proxy/airlock/internal/metrics/metricstest"
	"github.com/airlock-proxy/airlock/internal/testkit/devstack"
)

// TestUsageTokensCounted: the tokens the upstream reports, in a JSON answer
// and in the last chunk of a stream with include_usage, are counted by
// client and model, equal to what the client itself was told.
func TestUsageTokensCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := sdk(st, st.ClientKey)
	params := openai.ChatCompletionNewParams{
		Model:         "gpt-4o-mini",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("count my tokens please")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}
	resp, err := c.Chat.Completions.New(testCtx(t), openai.ChatCompletionNewParams{Model: params.Model, Messages: params.Messages})
	if err != nil {
		t.Fatal(err)
	}
	prompt, completion := resp.Usage.PromptTokens, resp.Usage.CompletionTokens
	stream := c.Chat.Completions.NewStreaming(testCtx(t), params)
	for stream.Next() {
		if u := stream.Current().Usage; u.TotalTokens > 0 {
			prompt += u.PromptTokens
			completion += u.CompletionTokens
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	if prompt == 0 || completion == 0 {
		t.Fatalf("the client saw no usage (prompt %d, completion %d)", prompt, completion)
	}
	metricstest.Check(t, st.EdgeAdminURL+"/metrics",
		fmt.Sprintf(`airlock_usage_tokens_total{client="dev",end="complete",model="gpt-4o-mini",type="prompt"} %d`, prompt),
		fmt.Sprintf(`airlock_usage_tokens_total{client="dev",end="complete",model="gpt-4o-mini",type="completion"} %d`, completion))
}
