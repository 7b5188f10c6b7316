package testupstream

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"
)

// do sends a request with the test key and returns the response.
func do(t *testing.T, ctx context.Context, client *http.Client, method, url string, body io.Reader, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func TestBulkDownload(t *testing.T) {
	const size = 8<<20 + 123
	_, srv, _ := newUpstream(t, Options{})
	res := do(t, context.Background(), srv.Client(), http.MethodGet,
		fmt.Sprintf("%s/v1/airlock-test/download?bytes=%d", srv.URL, size), nil, nil)
	if res.StatusCode != http.StatusOK || res.ContentLength != size {
		t.Fatalf("got %d with Content-Length %d, want 200 with %d", res.StatusCode, res.ContentLength, size)
	}
	checkAPIHeaders(t, res.Header)
	br := bufio.NewReaderSize(res.Body, 64<<10)
	var n int64
	for {
		b, err := br.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading at %d: %v", n, err)
		}
		if want := PatternByte(n); b != want {
			t.Fatalf("byte %d = %#x, want %#x", n, b, want)
		}
		n++
	}
	if n != size {
		t.Errorf("got %d bytes, want %d", n, size)
	}
}

func TestBulkUpload(t *testing.T) {
	const size = 8 << 20
	_, srv, _ := newUpstream(t, Options{})
	rng := rand.NewChaCha8([32]byte{1})
	data := make([]byte, size)
	_, _ = rng.Read(data)
	sum := sha256.Sum256(data)

	// Stream it through a pipe so the request is chunked, not sized.
	pr, pw := io.Pipe()
	go func() {
		for b := data; len(b) > 0; {
			n := min(len(b), 100_000)
			if _, err := pw.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
		pw.Close()
	}()
	res := do(t, context.Background(), srv.Client(), http.MethodPost, srv.URL+"/v1/airlock-test/upload", pr, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("got %d, want 200", res.StatusCode)
	}
	var got UploadResult
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if want := (UploadResult{Bytes: size, SHA256: hex.EncodeToString(sum[:])}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestEcho(t *testing.T) {
	up, srv, _ := newUpstream(t, Options{})
	h := http.Header{"X-Custom": {"a", "b"}, "Openai-Organization": {"org-1"}}
	res := do(t, context.Background(), srv.Client(), http.MethodPost,
		srv.URL+"/v1/airlock-test/echo?x=1&y=%2F", strings.NewReader("twelve bytes"), h)
	var got EchoResult
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Method != "POST" || got.Path != "/v1/airlock-test/echo" || got.RawQuery != "x=1&y=%2F" || got.BodyBytes != 12 {
		t.Errorf("got %s %s ?%s with %d body bytes", got.Method, got.Path, got.RawQuery, got.BodyBytes)
	}
	if v := got.Header["X-Custom"]; len(v) != 2 || v[0] != "a" || v[1] != "b" {
		t.Errorf("X-Custom = %v, want [a b]", v)
	}
	if v := got.Header["Openai-Organization"]; len(v) != 1 || v[0] != "org-1" {
		t.Errorf("Openai-Organization = %v, want [org-1]", v)
	}
	info := nextRequest(t, up, "/v1/airlock-test/echo")
	if info.Query != "x=1&y=%2F" || info.Header.Get("X-Custom") != "a" {
		t.Errorf("RequestInfo query %q, X-Custom %q", info.Query, info.Header.Get("X-Custom"))
	}
}

// readSSE returns the data of each event of an SSE body, up to [DONE].
func readSSE(t *testing.T, body io.Reader) (events []string, arrived []time.Time) {
	t.Helper()
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return events, arrived
		}
		events, arrived = append(events, data), append(arrived, time.Now())
	}
	t.Fatalf("stream ended without [DONE]: %v", sc.Err())
	return nil, nil
}

func TestSSE(t *testing.T) {
	const n, interval = 6, 5 * time.Millisecond
	_, srv, _ := newUpstream(t, Options{})
	res := do(t, context.Background(), srv.Client(), http.MethodGet,
		fmt.Sprintf("%s/v1/airlock-test/sse?events=%d&interval=%v&pad=3", srv.URL, n, interval), nil, nil)
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	events, arrived := readSSE(t, res.Body)
	if len(events) != n {
		t.Fatalf("got %d events, want %d", len(events), n)
	}
	for i, data := range events {
		var e SSEEvent
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if e.Seq != i || e.SentUnixNs == 0 || e.Pad != "xxx" {
			t.Errorf("event %d = %+v", i, e)
		}
	}
	if gap, min := arrived[n-1].Sub(arrived[0]), (n-1)*interval/2; gap < min {
		t.Errorf("events spread over %v, want at least %v", gap, min)
	}
}

func TestHoldCancel(t *testing.T) {
	up, srv, _ := newUpstream(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := do(t, ctx, srv.Client(), http.MethodGet, srv.URL+"/v1/airlock-test/hold", nil, nil)
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ":") {
		t.Fatalf("first line %q, %v; want an SSE comment", line, err)
	}
	info := nextRequest(t, up, "/v1/airlock-test/hold")
	select {
	case <-info.Done:
		t.Fatal("hold ended before the client cancelled")
	default:
	}
	cancel()
	waitCanceled(t, info, 200*time.Millisecond)
}

func TestTranscriptionStreamedText(t *testing.T) {
	const size = 8 << 20
	_, srv, _ := newUpstream(t, Options{})
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			if err := mw.WriteField("model", "whisper-1"); err != nil {
				return err
			}
			if err := mw.WriteField("response_format", "text"); err != nil {
				return err
			}
			fw, err := mw.CreateFormFile("file", "long.mp3")
			if err != nil {
				return err
			}
			if _, err := io.CopyN(fw, rand.NewChaCha8([32]byte{2}), size); err != nil {
				return err
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	res := do(t, context.Background(), srv.Client(), http.MethodPost, srv.URL+"/v1/audio/transcriptions", pr,
		http.Header{"Content-Type": {mw.FormDataContentType()}})
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("got %d %q, %v", res.StatusCode, body, err)
	}
	if want := TranscriptionText(size, "long.mp3") + "\n"; string(body) != want {
		t.Errorf("got %q, want %q", body, want)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}
}
