package proto

import (
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// manyHeaderMap returns n distinct canonical headers.
func manyHeaderMap(n int) http.Header {
	h := make(http.Header, n)
	for i := range n {
		h["X-H-"+itoa4(i)] = []string{"value-" + itoa4(i)}
	}
	return h
}

func TestRequestHeadRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		head RequestHead
	}{
		{"minimal", RequestHead{Method: "GET", Path: "/models", ContentLength: -1}},
		{"all fields", RequestHead{
			Method: "POST",
			Path:   "/chat/completions?x=1&y=%2F",
			Header: http.Header{
				"Content-Type": {"application/json"},
				"Accept":       {"text/event-stream"},
				"User-Agent":   {"OpenAI/Python 1.0"},
			},
			RequestID:     "req-01HZX",
			Upstream:      "openai",
			Client:        "alice",
			ContentLength: 1234,
		}},
		{"many headers", RequestHead{Method: "GET", Path: "/", Header: manyHeaderMap(DefaultMaxHeaderCount), ContentLength: -1}},
		{"multi-valued headers", RequestHead{Method: "GET", Path: "/", Header: http.Header{
			"Cookie":  {"a=1", "b=2", "c=3"},
			"X-Multi": {"z", "a", "m"},
		}, ContentLength: -1}},
		{"empty header value", RequestHead{Method: "GET", Path: "/", Header: http.Header{"X-Empty": {""}}, ContentLength: -1}},
		{"empty header map", RequestHead{Method: "GET", Path: "/", Header: http.Header{}, ContentLength: -1}},
		{"nil header", RequestHead{Method: "GET", Path: "/", ContentLength: -1}},
		{"value with tab and obs-text", RequestHead{Method: "GET", Path: "/", Header: http.Header{"X-V": {"a\tb \xff"}}, ContentLength: -1}},
		{"content length 0", RequestHead{Method: "POST", Path: "/", ContentLength: 0}},
		{"content length 1", RequestHead{Method: "POST", Path: "/", ContentLength: 1}},
		{"content length large", RequestHead{Method: "POST", Path: "/", ContentLength: 1 << 40}},
		{"content length 2^62", RequestHead{Method: "POST", Path: "/", ContentLength: 1 << 62}},
		{"unknown content length", RequestHead{Method: "POST", Path: "/upload", ContentLength: -1}},
		{"token method", RequestHead{Method: "M-SEARCH", Path: "/*", ContentLength: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.head
			if want.Header == nil {
				want.Header = http.Header{}
			}

			got, err := DecodeRequestHead(AppendRequestHead(nil, &tt.head), Limits{})
			if err != nil {
				t.Fatalf("DecodeRequestHead: %v", err)
			}
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("decoded: got %+v, want %+v", *got, want)
			}

			var wire bytes.Buffer
			if err := NewWriter(&wire, Limits{}).WriteRequestHead(&tt.head); err != nil {
				t.Fatalf("WriteRequestHead: %v", err)
			}
			got, err = NewReader(&wire, Limits{}).ReadRequestHead()
			if err != nil {
				t.Fatalf("ReadRequestHead: %v", err)
			}
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("read: got %+v, want %+v", *got, want)
			}
			if wire.Len() != 0 {
				t.Fatalf("got %d bytes left after the head, want 0", wire.Len())
			}
		})
	}
}

func TestResponseHeadRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		head ResponseHead
	}{
		{"100", ResponseHead{Status: 100, ContentLength: -1}},
		{"101 upgrade", ResponseHead{Status: 101, Header: http.Header{"Upgrade": {"websocket"}, "Sec-Websocket-Accept": {"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}}, ContentLength: -1}},
		{"200 streaming", ResponseHead{Status: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, ContentLength: -1}},
		{"200 known length", ResponseHead{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, ContentLength: 17}},
		{"204 length 0", ResponseHead{Status: 204, ContentLength: 0}},
		{"upstream time", ResponseHead{Status: 200, ContentLength: -1, UpstreamTime: 1234567 * time.Microsecond}},
		{"multi-valued", ResponseHead{Status: 200, Header: http.Header{"Set-Cookie": {"a=1", "b=2"}, "Vary": {"Accept", "Origin"}}, ContentLength: -1}},
		{"many headers", ResponseHead{Status: 200, Header: manyHeaderMap(DefaultMaxHeaderCount), ContentLength: -1}},
		{"empty value", ResponseHead{Status: 404, Header: http.Header{"X-Empty": {""}}, ContentLength: -1}},
		{"empty header map", ResponseHead{Status: 500, Header: http.Header{}, ContentLength: -1}},
		{"599", ResponseHead{Status: 599, ContentLength: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.head
			if want.Header == nil {
				want.Header = http.Header{}
			}

			got, err := DecodeResponseHead(AppendResponseHead(nil, &tt.head), Limits{})
			if err != nil {
				t.Fatalf("DecodeResponseHead: %v", err)
			}
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("decoded: got %+v, want %+v", *got, want)
			}

			var wire bytes.Buffer
			if err := NewWriter(&wire, Limits{}).WriteResponseHead(&tt.head); err != nil {
				t.Fatalf("WriteResponseHead: %v", err)
			}
			got, err = NewReader(&wire, Limits{}).ReadResponseHead()
			if err != nil {
				t.Fatalf("ReadResponseHead: %v", err)
			}
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("read: got %+v, want %+v", *got, want)
			}
		})
	}
}

// TestWireFormatGolden pins the exact bytes of version 1, so that an encoder
// change that would break an older peer fails here.
func TestWireFormatGolden(t *testing.T) {
	var wire bytes.Buffer
	w := NewWriter(&wire, Limits{})
	if err := w.WriteRequestHead(&RequestHead{Method: "GET", Path: "/m", Header: http.Header{"A": {"b"}}, RequestID: "r", ContentLength: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := w.End(nil); err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x01, 20, // HEAD, 20 bytes
		1, 3, 'G', 'E', 'T', // method
		2, 2, '/', 'm', // path
		3, 3, 1, 'A', 'b', // header A: b
		4, 1, 'r', // request id
		7, 1, 1, // content length 0 (n+1)
		0x02, 2, 'h', 'i', // DATA
		0x03, 0, // END, no trailers
	}
	if !bytes.Equal(wire.Bytes(), want) {
		t.Fatalf("got % x, want % x", wire.Bytes(), want)
	}

	wire.Reset()
	if err := NewWriter(&wire, Limits{}).Reset(CodeRefused, "x"); err != nil {
		t.Fatal(err)
	}
	want = []byte{0x04, 6, 1, 1, 2, 2, 1, 'x'}
	if !bytes.Equal(wire.Bytes(), want) {
		t.Fatalf("RESET: got % x, want % x", wire.Bytes(), want)
	}
}

func TestDecodeRequestHeadErrors(t *testing.T) {
	method := rawStr(tagReqMethod, "GET")
	path := rawStr(tagReqPath, "/")
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty payload", nil},
		{"missing method", path},
		{"empty method", cat(rawStr(tagReqMethod, ""), path)},
		{"method with space", cat(rawStr(tagReqMethod, "GE T"), path)},
		{"method with CRLF", cat(rawStr(tagReqMethod, "GET\r\n"), path)},
		{"method with separator", cat(rawStr(tagReqMethod, "GET/1"), path)},
		{"method non-ASCII", cat(rawStr(tagReqMethod, "G\xc3\x89T"), path)},
		{"missing path", method},
		{"empty path", cat(method, rawStr(tagReqPath, ""))},
		{"relative path", cat(method, rawStr(tagReqPath, "chat/completions"))},
		{"absolute URL path", cat(method, rawStr(tagReqPath, "http://evil.example/x"))},
		{"path with space", cat(method, rawStr(tagReqPath, "/a b"))},
		{"path with tab", cat(method, rawStr(tagReqPath, "/a\tb"))},
		{"path with CRLF", cat(method, rawStr(tagReqPath, "/a\r\nHost: evil"))},
		{"path with NUL", cat(method, rawStr(tagReqPath, "/a\x00"))},
		{"path with DEL", cat(method, rawStr(tagReqPath, "/a\x7f"))},
		{"path with non-ASCII", cat(method, rawStr(tagReqPath, "/\xc3\xa9"))},
		{"request id with space", reqPayload(rawStr(tagReqRequestID, "a b"))},
		{"upstream with control char", reqPayload(rawStr(tagReqUpstream, "open\x01ai"))},
		{"client with NUL", reqPayload(rawStr(tagReqClient, "al\x00ice"))},
		{"header name with space", reqPayload(rawHeader(tagReqHeader, "Bad Name", "v"))},
		{"header name empty", reqPayload(rawHeader(tagReqHeader, "", "v"))},
		{"header name with colon", reqPayload(rawHeader(tagReqHeader, "A:b", "v"))},
		{"header name with NUL", reqPayload(rawHeader(tagReqHeader, "A\x00", "v"))},
		{"header name non-ASCII", reqPayload(rawHeader(tagReqHeader, "\xc3\xa9", "v"))},
		{"header value with CR", reqPayload(rawHeader(tagReqHeader, "A", "x\ry"))},
		{"header value with LF", reqPayload(rawHeader(tagReqHeader, "A", "x\ny"))},
		{"header value with NUL", reqPayload(rawHeader(tagReqHeader, "A", "x\x00y"))},
		{"header value smuggling a line", reqPayload(rawHeader(tagReqHeader, "A", "x\r\nAuthorization: Bearer evil"))},
		{"more headers than MaxHeaderCount", reqPayload(manyHeaders(tagReqHeader, DefaultMaxHeaderCount+1))},
		{"header name length beyond field", reqPayload(rawField(tagReqHeader, cat(uv(10), "abc")))},
		{"header field empty", reqPayload(rawField(tagReqHeader, nil))},
		{"header name length truncated varint", reqPayload(rawField(tagReqHeader, []byte{0x80}))},
		{"truncated field tag varint", reqPayload([]byte{0x80})},
		{"overlong field tag varint", reqPayload(bytes.Repeat([]byte{0xff}, 11))},
		{"truncated field length varint", reqPayload(cat(uv(99), byte(0x80)))},
		{"missing field length", reqPayload(uv(99))},
		{"field length beyond payload", reqPayload(cat(uv(99), uv(50), "abc"))},
		{"field length beyond payload by one", reqPayload(cat(uv(tagReqClient), uv(4), "abc"))},
		{"content length empty", reqPayload(rawField(tagReqContentLength, nil))},
		{"content length truncated varint", reqPayload(rawField(tagReqContentLength, []byte{0x80}))},
		{"content length trailing bytes", reqPayload(rawField(tagReqContentLength, []byte{1, 2}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := DecodeRequestHead(tt.payload, Limits{})
			checkErr(t, err, ErrProtocol)
			if h != nil {
				t.Fatalf("got head %+v with the error, want nil", h)
			}
			_, err = NewReader(bytes.NewReader(rawFrame(FrameHead, tt.payload)), Limits{}).ReadRequestHead()
			checkErr(t, err, ErrProtocol)
		})
	}
}

func TestDecodeRequestHeadAccepts(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    RequestHead
	}{
		{"exactly MaxHeaderCount headers", reqPayload(manyHeaders(tagReqHeader, DefaultMaxHeaderCount)),
			RequestHead{Method: "GET", Path: "/", Header: manyHeaderMapV(DefaultMaxHeaderCount), ContentLength: -1}},
		{"unknown tags skipped", reqPayload(rawStr(99, "future"), rawField(1<<40, []byte{0xff, 0x00})),
			RequestHead{Method: "GET", Path: "/", Header: http.Header{}, ContentLength: -1}},
		{"later scalar field wins", reqPayload(rawStr(tagReqMethod, "PUT")),
			RequestHead{Method: "PUT", Path: "/", Header: http.Header{}, ContentLength: -1}},
		{"content length absent is unknown", reqPayload(),
			RequestHead{Method: "GET", Path: "/", Header: http.Header{}, ContentLength: -1}},
		{"content length 0 on the wire is unknown", reqPayload(rawUint(tagReqContentLength, 0)),
			RequestHead{Method: "GET", Path: "/", Header: http.Header{}, ContentLength: -1}},
		{"content length beyond 2^62 is unknown", reqPayload(rawUint(tagReqContentLength, 1<<63)),
			RequestHead{Method: "GET", Path: "/", Header: http.Header{}, ContentLength: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRequestHead(tt.payload, Limits{})
			if err != nil {
				t.Fatalf("DecodeRequestHead: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Fatalf("got %+v, want %+v", *got, tt.want)
			}
		})
	}
}

// manyHeaderMapV is the decoded form of manyHeaders.
func manyHeaderMapV(n int) http.Header {
	h := make(http.Header, n)
	for i := range n {
		h["X-H-"+itoa4(i)] = []string{"v"}
	}
	return h
}

func TestDecodeResponseHeadErrors(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty payload", nil},
		{"status 0", rawUint(tagRespStatus, 0)},
		{"status 99", rawUint(tagRespStatus, 99)},
		{"status 600", rawUint(tagRespStatus, 600)},
		{"upstream time out of range", cat(rawUint(tagRespStatus, 200), rawUint(tagRespUpstreamTime, 1<<63))},
		{"status huge", rawUint(tagRespStatus, 1<<40+200)},
		{"status bad number", rawField(tagRespStatus, []byte{0xc8})},
		{"status trailing bytes", rawField(tagRespStatus, []byte{0xc8, 0x01, 0x00})},
		{"header name invalid", respPayload(rawHeader(tagRespHeader, "Set Cookie", "a"))},
		{"header value with CR", respPayload(rawHeader(tagRespHeader, "Location", "/x\r"))},
		{"header value with LF", respPayload(rawHeader(tagRespHeader, "Location", "/x\nSet-Cookie: a=1"))},
		{"header value with NUL", respPayload(rawHeader(tagRespHeader, "Location", "/x\x00"))},
		{"more headers than MaxHeaderCount", respPayload(manyHeaders(tagRespHeader, DefaultMaxHeaderCount+1))},
		{"header name length beyond field", respPayload(rawField(tagRespHeader, cat(uv(200), "X")))},
		{"truncated varint", respPayload([]byte{0x80})},
		{"field length beyond payload", respPayload(cat(uv(tagRespHeader), uv(1000)))},
		{"content length bad number", respPayload(rawField(tagRespContentLength, []byte{0x80}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := DecodeResponseHead(tt.payload, Limits{})
			checkErr(t, err, ErrProtocol)
			if h != nil {
				t.Fatalf("got head %+v with the error, want nil", h)
			}
			_, err = NewReader(bytes.NewReader(rawFrame(FrameHead, tt.payload)), Limits{}).ReadResponseHead()
			checkErr(t, err, ErrProtocol)
		})
	}
}

func TestHeaderCountLimitIsConfigurable(t *testing.T) {
	lim := Limits{MaxHeaderCount: 16}
	if _, err := DecodeRequestHead(reqPayload(manyHeaders(tagReqHeader, 16)), lim); err != nil {
		t.Fatalf("16 headers: got %v, want nil", err)
	}
	_, err := DecodeRequestHead(reqPayload(manyHeaders(tagReqHeader, 17)), lim)
	checkErr(t, err, ErrProtocol)
	// Each value of a multi-valued header counts.
	_, err = DecodeResponseHead(respPayload(bytes.Repeat(rawHeader(tagRespHeader, "Set-Cookie", "a"), 17)), lim)
	checkErr(t, err, ErrProtocol)
}

// TestHeaderNamesCanonicalized: a peer that spells a header in lower case
// must not slip it past a later Del. The relay strips client credentials with
// Header.Del("Authorization"), which only sees the canonical key.
func TestHeaderNamesCanonicalized(t *testing.T) {
	tests := []struct {
		name     string
		wireName string
		want     string
	}{
		{"authorization", "authorization", "Authorization"},
		{"AUTHORIZATION", "AUTHORIZATION", "Authorization"},
		{"api-key", "api-key", "Api-Key"},
		{"x-forwarded-for", "x-forwarded-for", "X-Forwarded-For"},
		{"proxy-authorization", "pRoXy-AuThOrIzAtIoN", "Proxy-Authorization"},
		{"airlock-upstream", "airlock-upstream", "Airlock-Upstream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			heads := map[string]http.Header{}

			req, err := DecodeRequestHead(reqPayload(rawHeader(tagReqHeader, tt.wireName, "secret"), rawHeader(tagReqHeader, tt.want, "other")), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			heads["request"] = req.Header

			resp, err := DecodeResponseHead(respPayload(rawHeader(tagRespHeader, tt.wireName, "secret")), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			heads["response"] = resp.Header

			_, trailer, err := readExchange(bytes.NewReader(cat(respHeadFrame, rawFrame(FrameEnd, rawHeader(tagEndTrailer, tt.wireName, "secret")))), responseSide, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			heads["trailer"] = trailer

			for where, h := range heads {
				if got := h.Get(tt.want); got != "secret" {
					t.Fatalf("%s: Get(%q) = %q, want %q", where, tt.want, got, "secret")
				}
				h.Del(tt.want)
				for k := range h {
					if strings.EqualFold(k, tt.want) {
						t.Fatalf("%s: key %q survived Del(%q)", where, k, tt.want)
					}
				}
			}
		})
	}
}
