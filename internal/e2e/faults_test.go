package e2e

// Fault-injection tests: the whole path (official client, edge, tunnel,
// relay, test upstream) on real loopback sockets, with a fault proxy from
// package faultproxy, or a CONNECT proxy, between edge and relay. Each test
// logs the figures it measures as "FIGURE: ..." lines (go test -v).
//
// Timing bounds are wide on purpose: the machine may be loaded, and a pass
// never waits for a bound. What the bounds catch is a mechanism that does
// not work at all (a dead peer never noticed, a fallback that never happens,
// a reconnect that waits for a default 10 s timer).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/airlock-proxy/airlock/internal/testkit/connectproxy"
	"github.com/airlock-proxy/airlock/internal/testkit/devstack"
	"github.com/airlock-proxy/airlock/internal/testkit/faultproxy"
	"github.com/airlock-proxy/airlock/internal/testkit/testlog"
	"github.com/airlock-proxy/airlock/internal/testkit/testupstream"
	"github.com/airlock-proxy/airlock/tunnel"
)

// unroutable is what a Route returns when it could not start its proxy: the
// edge then never connects, and the test fails on its start bound.
const unroutable = "127.0.0.1:1"

// faultLogs gives a stack a logger into a buffer that is printed if the test
// fails. Registered before the stack's Close, it prints after it, so the
// shutdown is in the log too.
func faultLogs(t *testing.T) *slog.Logger {
	t.Helper()
	buf := &testlog.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("edge, relay and upstream logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startFaultStack starts a stack with opts (and a log buffer), waiting at
// most within for its tunnel, and closes it at the end of the test. It
// returns how long the start took. Proxies that opts.Route starts register
// their Close before the stack's, so they close after it.
func startFaultStack(t *testing.T, opts devstack.Options, within time.Duration) (*devstack.Stack, time.Duration) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = faultLogs(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	start := time.Now()
	st, err := devstack.Start(ctx, opts)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("starting the stack (waited %v, bound %v): %v", took.Round(time.Millisecond), within, err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the stack: %v", err)
		}
	})
	return st, took
}

// newUDPFault starts a UDP fault proxy to target, closed at the end of the
// test; nil (and the test marked failed) if it cannot start.
func newUDPFault(t *testing.T, target string, opts faultproxy.Options) *faultproxy.UDP {
	p, err := faultproxy.NewUDP(target, opts)
	if err != nil {
		t.Errorf("UDP fault proxy: %v", err)
		return nil
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("closing the UDP fault proxy: %v", err)
		}
	})
	return p
}

// newTCPFault starts a TCP fault proxy to target, closed at the end of the
// test; nil (and the test marked failed) if it cannot start.
func newTCPFault(t *testing.T, target string, opts faultproxy.Options) *faultproxy.TCP {
	p, err := faultproxy.NewTCP(target, opts)
	if err != nil {
		t.Errorf("TCP fault proxy: %v", err)
		return nil
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("closing the TCP fault proxy: %v", err)
		}
	})
	return p
}

// pathFaults are the faults of whichever proxy sits on a transport's path.
type pathFaults struct {
	setBlackhole func(bool)
	setLoss      func(float64)
	setDelay     func(time.Duration)
	stats        func() string
	// udp is the UDP proxy, nil on the TCP path.
	udp *faultproxy.UDP
}

// routeThroughFault returns a Route that puts a fault proxy on transport's
// path (UDP for "quic", TCP for "tcp") and leaves the other address direct,
// and the proxy's faults, valid once the Route has run. setup, if not nil,
// is applied to the proxy before the edge dials.
func routeThroughFault(t *testing.T, transport string, setup func(pathFaults)) (func(udp, tcp net.Addr) (string, string), *pathFaults) {
	pf := &pathFaults{}
	return func(udp, tcp net.Addr) (string, string) {
		switch transport {
		case "quic":
			p := newUDPFault(t, udp.String(), faultproxy.Options{})
			if p == nil {
				return unroutable, unroutable
			}
			*pf = pathFaults{p.SetBlackhole, p.SetLoss, p.SetDelay, func() string { return fmt.Sprintf("%+v", p.Stats()) }, p}
			if setup != nil {
				setup(*pf)
			}
			return p.Addr(), tcp.String()
		default:
			p := newTCPFault(t, tcp.String(), faultproxy.Options{})
			if p == nil {
				return unroutable, unroutable
			}
			*pf = pathFaults{p.SetBlackhole, p.SetLoss, p.SetDelay, func() string { return fmt.Sprintf("%+v", p.Stats()) }, nil}
			if setup != nil {
				setup(*pf)
			}
			return udp.String(), p.Addr()
		}
	}, pf
}

// eventually polls cond every few milliseconds until it holds, and returns
// how long that took, or false once within has passed.
func eventually(within time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > within {
			return time.Since(start), false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// chatOnce makes one non-streamed chat completion with the official client
// and checks that the answer quotes prompt.
func chatOnce(ctx context.Context, st *devstack.Stack, prompt string) error {
	c := sdk(st, st.ClientKey)
	resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	})
	if err != nil {
		return err
	}
	if len(resp.Choices) != 1 || !strings.Contains(resp.Choices[0].Message.Content, prompt) {
		return fmt.Errorf("got choices %+v, want one answer quoting %q", resp.Choices, prompt)
	}
	return nil
}

// mustChat is chatOnce within 10 s, failing the test on an error.
func mustChat(t *testing.T, st *devstack.Stack, prompt string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := chatOnce(ctx, st, prompt); err != nil {
		t.Fatalf("chat completion %q: %v", prompt, err)
	}
}

// expectUnavailable sends a raw chat completion request to the edge and
// checks that it is answered at once with 503, Retry-After and an
// OpenAI-shaped error, as it must be while no tunnel session is up.
func expectUnavailable(t *testing.T, st *devstack.Stack) {
	t.Helper()
	const fast = time.Second
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"anyone there?"}]}`
	req, err := http.NewRequest(http.MethodPost, st.EdgeURL+"/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+st.ClientKey)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("request while no tunnel is up: %v (after %v)", err, time.Since(start))
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("reading the answer while no tunnel is up: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("got status %d (%s) while no tunnel is up, want 503", resp.StatusCode, raw)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After (headers %v)", resp.Header)
	}
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("got body %q, want OpenAI error JSON with a message and a type", raw)
	}
	if took > fast {
		t.Errorf("the 503 took %v, want it at once (under %v)", took, fast)
	}
	t.Logf("503 with Retry-After %q in %v while no tunnel was up", resp.Header.Get("Retry-After"), took.Round(time.Microsecond))
}

// longStream is a streamed chat completion in flight that would take far
// longer than the test.
type longStream struct {
	stream *ssestream.Stream[openai.ChatCompletionChunk]
	cancel context.CancelFunc
}

// startLongStream starts a streamed chat completion of 1000 chunks and
// reads its first events. The stream is closed at the end of the test.
func startLongStream(t *testing.T, st *devstack.Stack) *longStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c := sdk(st, st.ClientKey)
	s := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a long answer please")},
	}, option.WithHeader("X-Test-Chunks", "1000"))
	t.Cleanup(func() {
		cancel()
		s.Close()
	})
	for i := range 3 {
		if !s.Next() {
			t.Fatalf("stream ended after %d events, before the fault: %v", i, s.Err())
		}
	}
	return &longStream{stream: s, cancel: cancel}
}

// mustFail reads the rest of the stream and checks that it ends with an
// error, never cleanly, within of since (when the fault happened).
func (ls *longStream) mustFail(t *testing.T, fault string, since time.Time, within time.Duration) {
	t.Helper()
	type result struct {
		err    error
		events int
	}
	ended := make(chan result, 1)
	go func() {
		n := 0
		for ls.stream.Next() {
			n++
		}
		ended <- result{ls.stream.Err(), n}
	}()
	select {
	case r := <-ended:
		if r.err == nil {
			t.Errorf("the in-flight stream ended cleanly %v after %s (%d more events): a cut stream must be an error",
				time.Since(since), fault, r.events)
			return
		}
		t.Logf("in-flight stream failed %v after %s, as it must (%d more events): %v",
			time.Since(since).Round(time.Millisecond), fault, r.events, r.err)
	case <-time.After(within - time.Since(since)):
		ls.cancel()
		<-ended
		t.Fatalf("the in-flight stream was still open %v after %s", within, fault)
	}
}

func TestUDPBlockedFallsBackToTCP(t *testing.T) {
	const (
		fallback = 500 * time.Millisecond
		probe    = 200 * time.Millisecond
		sessions = 2 // the edge's default tunnel.connections
	)
	var (
		udp *faultproxy.UDP
		tcp *faultproxy.TCP // a clean path: it counts the TCP sessions
	)
	st, took := startFaultStack(t, devstack.Options{
		Transport: "auto",
		Tunnel: tunnel.Config{
			FallbackTimeout: fallback, QUICProbeInterval: probe, Connections: sessions,
		},
		Route: func(u, tc net.Addr) (string, string) {
			if udp = newUDPFault(t, u.String(), faultproxy.Options{}); udp == nil {
				return unroutable, unroutable
			}
			udp.SetBlackhole(true) // UDP blocked from the start
			if tcp = newTCPFault(t, tc.String(), faultproxy.Options{}); tcp == nil {
				return unroutable, unroutable
			}
			return udp.Addr(), tcp.Addr()
		},
	}, fallback+3*time.Second)
	t.Logf("FIGURE: fallback to TCP took %v", took.Round(time.Millisecond))
	if took < fallback {
		t.Errorf("the tunnel was up after %v, before the fallback timeout %v: QUIC cannot have been tried first", took, fallback)
	}
	if tr := st.Edge.Transport(); tr != "tcp" {
		t.Fatalf("transport %q with UDP blocked, want tcp", tr)
	}
	mustChat(t, st, "over the TCP fallback")
	// The pool's connections come up one after the other: wait until every
	// one has fallen back, so that what moves them to QUIC below can only
	// be the probe, not a first QUIC attempt still under way.
	if d, ok := eventually(fallback+3*time.Second, func() bool { return tcp.Stats().Active == sessions }); !ok {
		t.Fatalf("%v after the start, %d TCP sessions, want all %d on TCP (TCP proxy %+v)", d, tcp.Stats().Active, sessions, tcp.Stats())
	}
	if s := udp.Stats(); s.ToTarget.Dropped == 0 || s.ToTarget.Forwarded != 0 {
		t.Errorf("UDP proxy stats %+v: want QUIC attempts dropped and none forwarded", s)
	}
	if tr := st.Edge.Transport(); tr != "tcp" {
		t.Fatalf("transport %q with UDP blocked and every session on TCP, want tcp", tr)
	}

	udp.SetBlackhole(false)
	// Back on QUIC: new requests go to QUIC, and every TCP session, idle,
	// has drained and closed.
	back, ok := eventually(5*time.Second, func() bool {
		return st.Edge.Transport() == "quic" && tcp.Stats().Active == 0
	})
	if !ok {
		t.Fatalf("%v after UDP came back (QUIC probe every %v): transport %q, %d TCP sessions open; want quic and none",
			back, probe, st.Edge.Transport(), tcp.Stats().Active)
	}
	t.Logf("FIGURE: back on QUIC %v after UDP returned", back.Round(time.Millisecond))
	tcpBytes := tcp.Stats().BytesToTarget
	mustChat(t, st, "back on QUIC")
	if s := udp.Stats(); s.ToTarget.Forwarded == 0 || s.ToClient.Forwarded == 0 {
		t.Errorf("UDP proxy stats %+v after the move back: want QUIC traffic both ways", s)
	}
	if s := tcp.Stats(); s.BytesToTarget != tcpBytes {
		t.Errorf("%d bytes went over TCP for a request after the move back to QUIC", s.BytesToTarget-tcpBytes)
	}
}

func TestSilentPartitionIsDetectedAndHeals(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		const (
			pingInterval = 200 * time.Millisecond
			pingTimeout  = 300 * time.Millisecond
			slack        = time.Second
			hold         = time.Second
		)
		route, path := routeThroughFault(t, transport, nil)
		st, _ := startFaultStack(t, devstack.Options{
			Transport: transport,
			Route:     route,
			Tunnel: tunnel.Config{
				PingInterval: pingInterval, PingTimeout: pingTimeout,
				ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond,
			},
		}, 10*time.Second)
		mustChat(t, st, "before the partition")
		stream := startLongStream(t, st)

		cut := time.Now()
		path.setBlackhole(true)
		detected, ok := eventually(pingInterval+pingTimeout+slack, func() bool { return !st.Edge.Ready() })
		if !ok {
			path.setBlackhole(false)
			t.Fatalf("edge still ready %v into a silent partition, want the dead peer noticed within ping_interval %v + ping_timeout %v (+%v slack)",
				detected, pingInterval, pingTimeout, slack)
		}
		t.Logf("FIGURE: %s dead peer detected after %v", transport, detected.Round(time.Millisecond))
		// The stream in flight died with the session: it must fail, not
		// hang until the partition heals.
		stream.mustFail(t, "the partition began", cut, pingInterval+pingTimeout+2*slack)

		expectUnavailable(t, st)
		// Stay partitioned a while, so that the edge's redials fail too and
		// the heal has to be picked up by a redial or a retransmission.
		time.Sleep(hold)
		if st.Edge.Ready() {
			t.Errorf("edge ready again during the partition (proxy %s)", path.stats())
		}
		partitioned := time.Since(cut)

		healed := time.Now()
		path.setBlackhole(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := st.Edge.WaitReady(ctx); err != nil {
			t.Fatalf("edge not ready %v after the partition healed: %v (proxy %s)", time.Since(healed), err, path.stats())
		}
		recovered := time.Since(healed)
		mustChat(t, st, "after the partition")
		t.Logf("FIGURE: %s ready again %v after the partition healed (partition lasted %v)",
			transport, recovered.Round(time.Millisecond), partitioned.Round(time.Millisecond))
	})
}

func TestRelayRestartDuringTraffic(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		const (
			reconnectMax = 500 * time.Millisecond
			slack        = 3 * time.Second
		)
		st, _ := startFaultStack(t, devstack.Options{
			Transport:    transport,
			TestUpstream: testupstream.Options{ChunkInterval: 50 * time.Millisecond},
			Tunnel:       tunnel.Config{ReconnectMin: 50 * time.Millisecond, ReconnectMax: reconnectMax},
		}, 10*time.Second)

		stream := startLongStream(t, st)
		stopped := time.Now()
		if err := st.StopRelay(); err != nil {
			t.Fatalf("stopping the relay: %v", err)
		}
		stream.mustFail(t, "the relay died", stopped, 5*time.Second)

		if d, ok := eventually(2*time.Second, func() bool { return !st.Edge.Ready() }); !ok {
			t.Fatalf("edge still ready %v after the relay died", d)
		}
		expectUnavailable(t, st)
		time.Sleep(200 * time.Millisecond) // a few failed redials while the relay is down

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := st.StartRelay(ctx); err != nil {
			t.Fatalf("restarting the relay: %v", err)
		}
		restarted := time.Now()
		var lastErr error
		attempts := 0
		back, ok := eventually(reconnectMax+slack, func() bool {
			attempts++
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			defer acancel()
			lastErr = chatOnce(actx, st, "after the restart")
			if lastErr == nil {
				return true
			}
			var apiErr *openai.Error
			if !errors.As(lastErr, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("attempt %d, %v after the restart: %v; want 503 until the tunnel is back, then success",
					attempts, time.Since(restarted).Round(time.Millisecond), lastErr)
			}
			time.Sleep(10 * time.Millisecond)
			return false
		})
		if !ok {
			t.Fatalf("no chat completion succeeded %v after the relay restarted (reconnect_max %v, %d attempts): %v",
				back, reconnectMax, attempts, lastErr)
		}
		t.Logf("FIGURE: %s reconnected %v after the relay restarted (%d attempts)", transport, back.Round(time.Millisecond), attempts)
	})
}

func TestLossyPathStreamsCompleteAndInOrder(t *testing.T) {
	forEachTransport(t, func(t *testing.T, transport string) {
		const (
			loss   = 0.05
			delay  = 25 * time.Millisecond // each way
			nWords = 28
		)
		route, path := routeThroughFault(t, transport, func(pf pathFaults) {
			pf.setLoss(loss)
			pf.setDelay(delay)
		})
		start := time.Now()
		st, _ := startFaultStack(t, devstack.Options{Transport: transport, Route: route}, 10*time.Second)
		t.Logf("tunnel up over the lossy path after %v", time.Since(start).Round(time.Millisecond))

		// The test upstream answers "You said: <prompt>. <suffix>" one
		// word per token. With X-Test-Chunks = 2 + the prompt's words, the
		// answer is exactly "You said: <prompt>.", and numbered words show
		// any token lost, repeated or out of order.
		words := make([]string, nWords)
		for i := range words {
			words[i] = fmt.Sprintf("w%02d", i+1)
		}
		prompt := strings.Join(words, " ")
		chunks := nWords + 2
		want := "You said: " + prompt + "."
		c := sdk(st, st.ClientKey)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		streamStart := time.Now()
		stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:         "gpt-4o-mini",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		}, option.WithHeader("X-Test-Chunks", fmt.Sprint(chunks)))
		defer stream.Close()
		var (
			text          strings.Builder
			tokens        int
			finishes      []string
			usage         openai.CompletionUsage
			usageChunks   int
			afterUsage    int
			sawRole       bool
			contentBefore bool
		)
		for stream.Next() {
			ch := stream.Current()
			if usageChunks > 0 {
				afterUsage++
			}
			if ch.Usage.TotalTokens > 0 {
				usage = ch.Usage
				usageChunks++
			}
			if len(ch.Choices) == 0 {
				continue
			}
			d := ch.Choices[0].Delta
			if d.Role == "assistant" {
				sawRole = true
				contentBefore = text.Len() > 0
			}
			if d.Content != "" {
				text.WriteString(d.Content)
				tokens++
			}
			if fr := ch.Choices[0].FinishReason; fr != "" {
				finishes = append(finishes, fr)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream over the lossy path: %v (proxy %s)", err, path.stats())
		}
		streamed := time.Since(streamStart)
		if got := text.String(); got != want {
			t.Errorf("streamed content over the lossy path:\n got %q\nwant %q", got, want)
		}
		if tokens != chunks {
			t.Errorf("got %d content events, want %d", tokens, chunks)
		}
		if !sawRole || contentBefore {
			t.Errorf("role chunk seen %v (content before it: %v), want it first", sawRole, contentBefore)
		}
		if len(finishes) != 1 || finishes[0] != "stop" {
			t.Errorf("finish reasons %q, want one \"stop\"", finishes)
		}
		if usageChunks != 1 || afterUsage != 0 {
			t.Errorf("got %d usage chunks and %d events after it, want exactly one, last", usageChunks, afterUsage)
		}
		if usage.PromptTokens != nWords || usage.CompletionTokens != int64(chunks) || usage.TotalTokens != int64(nWords+chunks) {
			t.Errorf("usage %+v, want %d prompt + %d completion tokens", usage, nWords, chunks)
		}

		resp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
		}, option.WithHeader("X-Test-Chunks", fmt.Sprint(chunks)))
		if err != nil {
			t.Fatalf("chat completion over the lossy path: %v (proxy %s)", err, path.stats())
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Content != want {
			t.Errorf("non-streamed answer %+v, want one choice %q", resp.Choices, want)
		}
		if resp.Usage.CompletionTokens != int64(chunks) {
			t.Errorf("non-streamed usage %+v, want %d completion tokens", resp.Usage, chunks)
		}
		if path.udp != nil {
			// Loss decisions follow a fixed sequence, so this holds in every
			// run unless far fewer datagrams than usual crossed.
			if s := path.udp.Stats(); s.ToTarget.Dropped+s.ToClient.Dropped == 0 {
				t.Errorf("UDP proxy stats %+v: no datagram was lost, the test did not exercise loss", s)
			}
		}
		t.Logf("FIGURE: %s stream of %d events over %v loss and %v each way took %v (proxy %s)",
			transport, chunks+3, loss, delay, streamed.Round(time.Millisecond), path.stats())
	})
}

func TestTCPThroughCONNECTProxy(t *testing.T) {
	const user, password = "edge", "proxy-secret-41"
	proxy, err := connectproxy.New(connectproxy.Options{Username: user, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proxy.Close(); err != nil {
			t.Errorf("closing the CONNECT proxy: %v", err)
		}
	})

	st, _ := startFaultStack(t, devstack.Options{Transport: "tcp", ProxyURL: proxy.URL(true)}, 10*time.Second)
	mustChat(t, st, "through the corporate proxy")
	if n := proxy.Tunnels(); n < 1 {
		t.Errorf("proxy made %d tunnels, want the edge's TCP sessions to go through it", n)
	}
	if tr := st.Edge.Transport(); tr != "tcp" {
		t.Errorf("transport %q, want tcp", tr)
	}

	// Wrong credentials: the tunnel never comes up, and the error says why.
	const wrong = "wrong-password-73"
	refusedBefore := proxy.Refused()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	bad, err := devstack.Start(ctx, devstack.Options{
		Transport: "tcp",
		ProxyURL:  "http://" + user + ":" + wrong + "@" + proxy.Addr(),
		Tunnel:    tunnel.Config{ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond},
		Logger:    faultLogs(t),
	})
	if err == nil {
		bad.Close()
		t.Fatal("the stack started through the proxy with wrong credentials")
	}
	if !errors.Is(err, tunnel.ErrProxyAuth) {
		t.Errorf("start error %q does not wrap tunnel.ErrProxyAuth", err)
	}
	if !strings.Contains(err.Error(), "407") {
		t.Errorf("start error %q does not mention the proxy's 407", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("start error %q repeats the proxy password", err)
	}
	if n := proxy.Refused() - refusedBefore; n < 1 {
		t.Errorf("proxy refused %d CONNECTs, want the edge's attempts refused with 407", n)
	}
	t.Logf("with wrong proxy credentials: %v", err)
}
