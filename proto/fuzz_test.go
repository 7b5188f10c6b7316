package proto

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"reflect"
	"runtime/metrics"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// fuzzLimits are small, so that the fuzzer reaches every limit quickly.
var fuzzLimits = Limits{MaxHeadSize: 1 << 10, MaxHeaderCount: 16, MaxDataSize: 1 << 10}

// checkDecodeErr fails t unless err is one a decoder may return for a
// hostile input.
func checkDecodeErr(t *testing.T, err error) {
	t.Helper()
	var re *ResetError
	switch {
	case err == io.EOF:
		t.Fatalf("got io.EOF, want ErrProtocol, io.ErrUnexpectedEOF or *ResetError")
	case errors.Is(err, ErrProtocol), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &re):
	default:
		t.Fatalf("got unexpected error %v (%T)", err, err)
	}
}

// checkHeader fails t unless h holds only canonical, valid fields.
func checkHeader(t *testing.T, h http.Header, lim Limits) {
	t.Helper()
	count := 0
	for k, vs := range h {
		if k != textproto.CanonicalMIMEHeaderKey(k) || !httpguts.ValidHeaderFieldName(k) {
			t.Fatalf("header key %q is not a canonical token", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				t.Fatalf("header %q has invalid value %q", k, v)
			}
		}
		count += len(vs)
	}
	if count > lim.MaxHeaderCount {
		t.Fatalf("got %d header fields, want at most %d", count, lim.MaxHeaderCount)
	}
}

func checkRequestHead(t *testing.T, h *RequestHead, lim Limits) {
	t.Helper()
	if h.Method == "" || !isToken(h.Method) {
		t.Fatalf("accepted method %q", h.Method)
	}
	if !strings.HasPrefix(h.Path, "/") || !Printable(h.Path) {
		t.Fatalf("accepted path %q", h.Path)
	}
	if h.Header == nil {
		t.Fatal("Header: got nil, want a map")
	}
	if h.ContentLength < -1 {
		t.Fatalf("ContentLength: got %d, want >= -1", h.ContentLength)
	}
	checkHeader(t, h.Header, lim)
	again, err := DecodeRequestHead(AppendRequestHead(nil, h), lim)
	if err != nil {
		t.Fatalf("re-decoding %+v: %v", h, err)
	}
	if !reflect.DeepEqual(again, h) {
		t.Fatalf("re-decoded: got %+v, want %+v", again, h)
	}
}

func requestHeadSeeds() [][]byte {
	return [][]byte{
		reqPayload(),
		AppendRequestHead(nil, &RequestHead{
			Method: "POST", Path: "/chat/completions?stream=true",
			Header:    http.Header{"Content-Type": {"application/json"}, "Accept": {"text/event-stream"}},
			RequestID: "req-1", Upstream: "openai", Client: "alice", ContentLength: 512,
		}),
		AppendRequestHead(nil, &RequestHead{Method: "GET", Path: "/", Header: http.Header{"Cookie": {"a=1", "b=2"}}, ContentLength: 0}),
		reqPayload(rawHeader(tagReqHeader, "authorization", "Bearer sk")),
		reqPayload(rawHeader(tagReqHeader, "X-Empty", "")),
		reqPayload(manyHeaders(tagReqHeader, 17)),
		reqPayload(rawHeader(tagReqHeader, "A", "b\r\nC: d")),
		reqPayload(rawField(tagReqHeader, cat(uv(10), "abc"))),
		reqPayload(rawUint(tagReqContentLength, 1<<63)),
		reqPayload(rawStr(99, "unknown field")),
		cat(rawStr(tagReqMethod, "GE T"), rawStr(tagReqPath, "/")),
		cat(rawStr(tagReqMethod, "GET"), rawStr(tagReqPath, "x")),
		{},
		{0x80},
		cat(uv(tagReqPath), uv(50), "abc"),
	}
}

func FuzzDecodeRequestHead(f *testing.F) {
	for _, s := range requestHeadSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := DecodeRequestHead(p, fuzzLimits)
		if err != nil {
			if !errors.Is(err, ErrProtocol) || h != nil {
				t.Fatalf("got (%v, %v), want (nil, ErrProtocol)", h, err)
			}
			return
		}
		checkRequestHead(t, h, fuzzLimits)
	})
}

func responseHeadSeeds() [][]byte {
	return [][]byte{
		respPayload(),
		AppendResponseHead(nil, &ResponseHead{Status: 200, Header: http.Header{"Content-Type": {"text/event-stream"}, "Set-Cookie": {"a=1", "b=2"}}, ContentLength: -1}),
		AppendResponseHead(nil, &ResponseHead{Status: 101, Header: http.Header{"Upgrade": {"websocket"}}, ContentLength: 0}),
		rawUint(tagRespStatus, 99),
		rawUint(tagRespStatus, 600),
		respPayload(rawHeader(tagRespHeader, "set-cookie", "x")),
		respPayload(rawHeader(tagRespHeader, "Location", "/\n")),
		respPayload(manyHeaders(tagRespHeader, 17)),
		{},
		{0x01, 0x02, 0xc8},
	}
}

func FuzzDecodeResponseHead(f *testing.F) {
	for _, s := range responseHeadSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := DecodeResponseHead(p, fuzzLimits)
		if err != nil {
			if !errors.Is(err, ErrProtocol) || h != nil {
				t.Fatalf("got (%v, %v), want (nil, ErrProtocol)", h, err)
			}
			return
		}
		if h.Status < 100 || h.Status > 599 {
			t.Fatalf("accepted status %d", h.Status)
		}
		if h.Header == nil {
			t.Fatal("Header: got nil, want a map")
		}
		checkHeader(t, h.Header, fuzzLimits)
		again, err := DecodeResponseHead(AppendResponseHead(nil, h), fuzzLimits)
		if err != nil {
			t.Fatalf("re-decoding %+v: %v", h, err)
		}
		if !reflect.DeepEqual(again, h) {
			t.Fatalf("re-decoded: got %+v, want %+v", again, h)
		}
	})
}

// fuzzControlType maps a fuzzed byte to a frame type: mostly the six control
// types, and for bytes from 0xf0 the types 0x00 to 0x0f (exchange frames and
// unknown ones).
func fuzzControlType(b byte) FrameType {
	switch {
	case b >= byte(FrameHello) && b <= byte(FrameStreamReset):
		return FrameType(b)
	case b >= 0xf0:
		return FrameType(b & 0x0f)
	}
	return FrameHello + FrameType(b%6)
}

type messageSeed struct {
	t byte
	p []byte
}

func messageSeeds() []messageSeed {
	var seeds []messageSeed
	for _, m := range []Message{
		&Hello{Version: ProtocolVersion, EdgeName: "edge", Software: "airlock/0.1", Features: []string{"upgrade"}},
		&Welcome{Version: ProtocolVersion, RelayName: "relay", SessionID: "s1", Upstreams: []string{"openai", "local"}, MaxStreams: 100},
		&Ping{ID: 7},
		&Pong{ID: 1<<64 - 1},
		&GoAway{Reason: "draining"},
		&StreamReset{StreamID: 4, Code: CodeCancel},
	} {
		seeds = append(seeds, messageSeed{byte(m.frameType()), m.appendTo(nil)})
	}
	return append(seeds,
		messageSeed{byte(FrameHello), rawStr(tagHelloFeature, "")},
		messageSeed{byte(FrameWelcome), rawStr(tagWelcomeUpstream, "a b")},
		messageSeed{byte(FramePing), rawField(tagPingID, []byte{0x80})},
		messageSeed{byte(FrameGoAway), []byte{0x80}},
		messageSeed{byte(FrameStreamReset), rawUint(tagStreamResetCode, 1<<32)},
		messageSeed{0xf1, reqPayload()},
		messageSeed{0xff, nil},
	)
}

func FuzzDecodeMessage(f *testing.F) {
	for _, s := range messageSeeds() {
		f.Add(s.t, s.p)
	}
	f.Fuzz(func(t *testing.T, typ byte, p []byte) {
		ft := fuzzControlType(typ)
		m, err := DecodeMessage(ft, p)
		if err != nil {
			if !errors.Is(err, ErrProtocol) || m != nil {
				t.Fatalf("got (%v, %v), want (nil, ErrProtocol)", m, err)
			}
			return
		}
		if m.frameType() != ft {
			t.Fatalf("decoded a %s from a %s frame", m.frameType(), ft)
		}
		again, err := DecodeMessage(ft, m.appendTo(nil))
		if err != nil {
			t.Fatalf("re-decoding %#v: %v", m, err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("re-decoded: got %#v, want %#v", again, m)
		}
	})
}

func readerSeeds() [][]byte {
	var wire bytes.Buffer
	w := NewWriter(&wire, fuzzLimits)
	_ = w.WriteRequestHead(&RequestHead{Method: "POST", Path: "/v", Header: http.Header{"A": {"b"}}, ContentLength: 5})
	_, _ = w.Write([]byte("hello"))
	_, _ = w.Write(pattern(1500)) // two frames
	_ = w.End(http.Header{"X-T": {"1"}})
	full := bytes.Clone(wire.Bytes())

	return [][]byte{
		full,
		full[:len(full)-1],
		cat(reqHeadFrame, endFrame),
		cat(reqHeadFrame, rawFrame(FrameData, []byte("x")), rawReset(uint64(CodeCancel), "gone")),
		rawReset(uint64(CodeRefused), "draining"),
		rawReset(0, ""),
		cat(reqHeadFrame, rawFrame(FrameData, nil)),
		cat(reqHeadFrame, rawFrameHeader(FrameData, 1<<10+1)),
		rawFrameHeader(FrameHead, 1<<28-1),
		cat(reqHeadFrame, reqHeadFrame),
		cat(reqHeadFrame, rawFrame(FrameEnd, rawHeader(tagEndTrailer, "x-lower", "v"))),
		rawFrame(0x7f, []byte("??")),
		{},
	}
}

// heapAllocBytes is the bytes allocated so far by the whole process.
// Allocations above 32 KiB, which a frame-length check must prevent, are
// counted at once; small ones are counted late, when the runtime flushes a
// per-P cache.
func heapAllocBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// FuzzReader runs an arbitrary byte stream through a Reader: it must never
// panic, never return io.EOF for a cut stream, never allocate much beyond
// its limits, and a head it accepts must survive a re-encoding.
func FuzzReader(f *testing.F) {
	for _, s := range readerSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Bound: the bufio buffer, the largest payload read before the
		// head (a control-sized frame of an unknown type), the decoded
		// head and the read buffer, with room to spare.
		const allocBound = 1 << 20
		// The count is process-wide and may include small allocations
		// made before this run (see heapAllocBytes), so an overrun counts
		// only if it repeats: a real one is deterministic.
		for attempt := 1; ; attempt++ {
			before := heapAllocBytes()
			readAllFuzz(t, data)
			got := heapAllocBytes() - before
			if got <= allocBound {
				return
			}
			if attempt == 3 {
				t.Fatalf("allocated %d bytes for %d bytes of input, want at most %d", got, len(data), allocBound)
			}
		}
	})
}

// readAllFuzz reads data as a request direction and checks what it gets.
func readAllFuzz(t *testing.T, data []byte) {
	r := NewReader(bytes.NewReader(data), fuzzLimits)
	h, err := r.ReadRequestHead()
	if err != nil {
		checkDecodeErr(t, err)
		return
	}
	checkRequestHead(t, h, fuzzLimits)

	buf := make([]byte, 2*fuzzLimits.MaxDataSize)
	total := 0
	for {
		n, err := r.Read(buf)
		if n > fuzzLimits.MaxDataSize {
			t.Fatalf("Read returned %d bytes, want at most one frame (%d)", n, fuzzLimits.MaxDataSize)
		}
		total += n
		if err == io.EOF {
			if tr := r.Trailer(); tr != nil {
				checkHeader(t, tr, fuzzLimits)
				again, err := decodeTrailer(appendTrailer(nil, tr), fuzzLimits)
				if err != nil || !reflect.DeepEqual(again, tr) {
					t.Fatalf("re-decoded trailers: got (%v, %v), want (%v, nil)", again, err, tr)
				}
			}
			break
		}
		if err != nil {
			checkDecodeErr(t, err)
			break
		}
		if n == 0 {
			t.Fatal("Read returned 0 bytes and no error")
		}
	}
	if total > len(data) {
		t.Fatalf("read %d body bytes from %d bytes of input", total, len(data))
	}
}
