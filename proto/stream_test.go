package proto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestExchangeRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		writes  [][]byte
		trailer http.Header
	}{
		{"no body", nil, nil},
		{"one write", [][]byte{[]byte("hello")}, nil},
		{"several writes", [][]byte{[]byte("data: 1\n\n"), []byte("data: 2\n\n"), pattern(70 << 10)}, nil},
		{"large body", [][]byte{pattern(3*DefaultMaxDataSize + 5)}, nil},
		{"with trailers", [][]byte{[]byte("x")}, http.Header{"Grpc-Status": {"0"}, "X-Multi": {"a", "b"}}},
		{"trailer with empty value", nil, http.Header{"X-Empty": {""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wire bytes.Buffer
			w := NewWriter(&wire, Limits{})
			if err := w.WriteResponseHead(&ResponseHead{Status: 200, ContentLength: -1}); err != nil {
				t.Fatal(err)
			}
			var want []byte
			for _, p := range tt.writes {
				n, err := w.Write(p)
				if err != nil || n != len(p) {
					t.Fatalf("Write: got (%d, %v), want (%d, nil)", n, err, len(p))
				}
				want = append(want, p...)
			}
			if w.Ended() {
				t.Fatal("Ended before End: got true, want false")
			}
			if err := w.End(tt.trailer); err != nil {
				t.Fatal(err)
			}
			if !w.Ended() {
				t.Fatal("Ended after End: got false, want true")
			}

			body, trailer, err := readExchange(&wire, responseSide, Limits{})
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			if !bytes.Equal(body, want) {
				t.Fatalf("body: got %d bytes, want %d (equal content)", len(body), len(want))
			}
			if !reflect.DeepEqual(trailer, tt.trailer) {
				t.Fatalf("trailer: got %v, want %v", trailer, tt.trailer)
			}
		})
	}
}

func TestWriteDataFraming(t *testing.T) {
	tests := []struct {
		name       string
		lim        Limits
		size       int
		wantFrames []int
		wantWrites int // underlying Write calls for the data
	}{
		{"empty writes nothing", Limits{}, 0, nil, 0},
		{"one byte", Limits{}, 1, []int{1}, 1},
		{"small", Limits{}, 100, []int{100}, 1},
		{"exactly 4 KiB in one write", Limits{}, 4 << 10, []int{4 << 10}, 1},
		{"4 KiB + 1", Limits{}, 4<<10 + 1, []int{4<<10 + 1}, 2},
		{"32 KiB", Limits{}, 32 << 10, []int{32 << 10}, 2},
		{"exactly MaxDataSize", Limits{}, DefaultMaxDataSize, []int{DefaultMaxDataSize}, 2},
		{"MaxDataSize + 1 splits", Limits{}, DefaultMaxDataSize + 1, []int{DefaultMaxDataSize, 1}, 3},
		{"2.5 x MaxDataSize splits", Limits{}, 5 * DefaultMaxDataSize / 2, []int{DefaultMaxDataSize, DefaultMaxDataSize, DefaultMaxDataSize / 2}, 6},
		{"custom MaxDataSize", Limits{MaxDataSize: 1 << 10}, 3000, []int{1024, 1024, 952}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wire writeRecorder
			w := NewWriter(&wire, tt.lim)
			if err := w.WriteRequestHead(&RequestHead{Method: "POST", Path: "/", ContentLength: -1}); err != nil {
				t.Fatal(err)
			}
			headWrites := wire.calls
			p := pattern(tt.size)
			n, err := w.Write(p)
			if err != nil || n != len(p) {
				t.Fatalf("Write: got (%d, %v), want (%d, nil)", n, err, len(p))
			}
			if got := wire.calls - headWrites; got != tt.wantWrites {
				t.Fatalf("underlying writes: got %d, want %d", got, tt.wantWrites)
			}
			if err := w.End(nil); err != nil {
				t.Fatal(err)
			}

			frames := splitFrames(t, wire.Bytes())
			if got := dataSizes(frames); !reflect.DeepEqual(got, tt.wantFrames) {
				t.Fatalf("DATA sizes: got %v, want %v", got, tt.wantFrames)
			}

			// The Reader sees the frames one by one.
			r := NewReader(bytes.NewReader(wire.Bytes()), tt.lim)
			if _, err := r.ReadRequestHead(); err != nil {
				t.Fatal(err)
			}
			body := readFrames(t, r, tt.wantFrames)
			if !bytes.Equal(body, p) {
				t.Fatal("body: got different bytes, want those written")
			}
		})
	}
}

func TestReadFromOneFramePerRead(t *testing.T) {
	tests := []struct {
		name       string
		lim        Limits
		chunks     []int
		wantFrames []int
	}{
		{"default limits", Limits{}, []int{1, 7, SmallBufferSize, 4096, CopyBufferSize, 100}, []int{1, 7, SmallBufferSize, 4096, CopyBufferSize, 100}},
		{"chunk larger than the copy buffer", Limits{}, []int{CopyBufferSize + 10, 3}, []int{SmallBufferSize, CopyBufferSize + 10 - SmallBufferSize, 3}},
		{"small reads keep the small buffer", Limits{}, []int{100, SmallBufferSize + 1}, []int{100, SmallBufferSize, 1}},
		{"a full small read grows the buffer", Limits{}, []int{SmallBufferSize, CopyBufferSize}, []int{SmallBufferSize, CopyBufferSize}},
		{"MaxDataSize below the copy buffer", Limits{MaxDataSize: 1 << 10}, []int{3000, 10}, []int{1024, 1024, 952, 10}},
		{"no data", Limits{}, nil, nil},
	}
	for _, tt := range tests {
		for _, viaCopy := range []bool{false, true} {
			name := tt.name
			if viaCopy {
				name += " via io.Copy"
			}
			t.Run(name, func(t *testing.T) {
				var wire bytes.Buffer
				w := NewWriter(&wire, tt.lim)
				if err := w.WriteRequestHead(&RequestHead{Method: "POST", Path: "/", ContentLength: -1}); err != nil {
					t.Fatal(err)
				}
				src := &chunkSource{}
				var want []byte
				for _, n := range tt.chunks {
					c := pattern(n)
					src.chunks = append(src.chunks, c)
					want = append(want, c...)
				}
				// Whatever the source yielded is on the wire before the
				// next read, which may block.
				src.beforeRead = func(i int) {
					if got := len(splitFrames(t, wire.Bytes())) - 1; got < i {
						t.Errorf("before source read %d: got %d DATA frames on the wire, want at least %d", i, got, i)
					}
				}
				var n int64
				var err error
				if viaCopy {
					n, err = io.Copy(w, src)
				} else {
					n, err = w.ReadFrom(src)
				}
				if err != nil || n != int64(len(want)) {
					t.Fatalf("ReadFrom: got (%d, %v), want (%d, nil)", n, err, len(want))
				}
				if w.Ended() {
					t.Fatal("ReadFrom wrote END: Ended got true, want false")
				}
				if err := w.End(nil); err != nil {
					t.Fatal(err)
				}

				if got := dataSizes(splitFrames(t, wire.Bytes())); !reflect.DeepEqual(got, tt.wantFrames) {
					t.Fatalf("DATA sizes: got %v, want %v", got, tt.wantFrames)
				}
				r := NewReader(&wire, tt.lim)
				if _, err := r.ReadRequestHead(); err != nil {
					t.Fatal(err)
				}
				body := readFrames(t, r, tt.wantFrames)
				if !bytes.Equal(body, want) {
					t.Fatal("body: got different bytes, want the source's")
				}
			})
		}
	}
}

func TestReadFromErrors(t *testing.T) {
	errSource := errors.New("source failed")
	errSink := errors.New("sink failed")

	t.Run("source error is a SourceError", func(t *testing.T) {
		var wire bytes.Buffer
		w := NewWriter(&wire, Limits{})
		if err := w.WriteResponseHead(&ResponseHead{Status: 200, ContentLength: -1}); err != nil {
			t.Fatal(err)
		}
		n, err := w.ReadFrom(&chunkSource{chunks: [][]byte{[]byte("abc")}, err: errSource})
		if n != 3 {
			t.Fatalf("n: got %d, want 3", n)
		}
		var se *SourceError
		if !errors.As(err, &se) || !errors.Is(err, errSource) {
			t.Fatalf("got error %v (%T), want a *SourceError wrapping %v", err, err, errSource)
		}
		if got := dataSizes(splitFrames(t, wire.Bytes())); !reflect.DeepEqual(got, []int{3}) {
			t.Fatalf("DATA sizes: got %v, want [3]", got)
		}
	})

	t.Run("write error is not a SourceError", func(t *testing.T) {
		w := NewWriter(io.Discard, Limits{})
		if err := w.WriteResponseHead(&ResponseHead{Status: 200, ContentLength: -1}); err != nil {
			t.Fatal(err)
		}
		w.w = failWriter{errSink}
		n, err := w.ReadFrom(&chunkSource{chunks: [][]byte{[]byte("abc")}})
		if n != 0 {
			t.Fatalf("n: got %d, want 0", n)
		}
		var se *SourceError
		if !errors.Is(err, errSink) || errors.As(err, &se) {
			t.Fatalf("got error %v (%T), want %v and no *SourceError", err, err, errSink)
		}
	})

	t.Run("write error from Write", func(t *testing.T) {
		for _, size := range []int{10, 64 << 10} {
			w := NewWriter(io.Discard, Limits{})
			if err := w.WriteResponseHead(&ResponseHead{Status: 200, ContentLength: -1}); err != nil {
				t.Fatal(err)
			}
			w.w = failWriter{errSink}
			n, err := w.Write(pattern(size))
			if n != 0 || !errors.Is(err, errSink) {
				t.Fatalf("size %d: got (%d, %v), want (0, %v)", size, n, err, errSink)
			}
		}
	})

	t.Run("head write error", func(t *testing.T) {
		err := NewWriter(failWriter{errSink}, Limits{}).WriteRequestHead(&RequestHead{Method: "GET", Path: "/"})
		if !errors.Is(err, errSink) {
			t.Fatalf("got %v, want %v", err, errSink)
		}
	})
}

func TestReaderSmallBuffersNeverSpanFrames(t *testing.T) {
	wire := cat(reqHeadFrame, rawFrame(FrameData, []byte("abcde")), rawFrame(FrameData, []byte("fghij")), endFrame)
	r := NewReader(bytes.NewReader(wire), Limits{})
	if _, err := r.ReadRequestHead(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	var got []string
	for {
		n, err := r.Read(buf)
		if n > 0 {
			got = append(got, string(buf[:n]))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"abc", "de", "fgh", "ij"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("reads: got %q, want %q", got, want)
	}
	// io.EOF is sticky.
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF: got (%d, %v), want (0, EOF)", n, err)
	}
}

func TestEndTrailers(t *testing.T) {
	tests := []struct {
		name    string
		trailer http.Header
		want    http.Header
	}{
		{"nil", nil, nil},
		{"empty map", http.Header{}, nil},
		{"one", http.Header{"X-Checksum": {"abc"}}, http.Header{"X-Checksum": {"abc"}}},
		{"multi-valued", http.Header{"X-A": {"1", "2"}, "X-B": {"3"}}, http.Header{"X-A": {"1", "2"}, "X-B": {"3"}}},
		{"non-canonical key", http.Header{"x-lower": {"v"}}, http.Header{"X-Lower": {"v"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wire bytes.Buffer
			w := NewWriter(&wire, Limits{})
			if err := w.WriteRequestHead(&RequestHead{Method: "POST", Path: "/", ContentLength: -1}); err != nil {
				t.Fatal(err)
			}
			if err := w.End(tt.trailer); err != nil {
				t.Fatal(err)
			}
			r := NewReader(&wire, Limits{})
			if _, err := r.ReadRequestHead(); err != nil {
				t.Fatal(err)
			}
			if r.Trailer() != nil {
				t.Fatalf("Trailer before END: got %v, want nil", r.Trailer())
			}
			if n, err := r.Read(make([]byte, 8)); n != 0 || err != io.EOF {
				t.Fatalf("Read: got (%d, %v), want (0, EOF)", n, err)
			}
			if !reflect.DeepEqual(r.Trailer(), tt.want) {
				t.Fatalf("Trailer: got %v, want %v", r.Trailer(), tt.want)
			}
		})
	}
}

func TestReset(t *testing.T) {
	codes := []ResetCode{CodeCancel, CodeRefused, CodeUpstreamError, CodeUpstreamTimeout, CodeProtocol, CodeInternal, 42, 1<<32 - 1}
	long := strings.Repeat("0123456789", 1000)
	longUTF8 := strings.Repeat("é", 3000) // 2 bytes each; an odd cut point splits a rune
	room := MaxResetSize - 16
	messages := []struct {
		name string
		msg  string
		want string
	}{
		{"no message", "", ""},
		{"short", "upstream closed the connection", "upstream closed the connection"},
		{"long ASCII truncated", long, long[:room]},
		{"long UTF-8 truncated", "x" + longUTF8, strings.ToValidUTF8(("x" + longUTF8)[:room], "?")},
	}
	for _, code := range codes {
		for _, m := range messages {
			for _, beforeHead := range []bool{true, false} {
				where := "in body"
				if beforeHead {
					where = "instead of head"
				}
				t.Run(code.String()+"/"+m.name+"/"+where, func(t *testing.T) {
					var wire bytes.Buffer
					w := NewWriter(&wire, Limits{})
					if !beforeHead {
						if err := w.WriteResponseHead(&ResponseHead{Status: 200, ContentLength: -1}); err != nil {
							t.Fatal(err)
						}
						if _, err := w.Write([]byte("partial")); err != nil {
							t.Fatal(err)
						}
					}
					if err := w.Reset(code, m.msg); err != nil {
						t.Fatal(err)
					}
					if !w.Ended() {
						t.Fatal("Ended after Reset: got false, want true")
					}
					frames := splitFrames(t, wire.Bytes())
					last := frames[len(frames)-1]
					if last.t != FrameReset || len(last.payload) > MaxResetSize {
						t.Fatalf("last frame: got %s of %d bytes, want RESET of at most %d", last.t, len(last.payload), MaxResetSize)
					}

					r := NewReader(&wire, Limits{})
					var err error
					if beforeHead {
						_, err = r.ReadResponseHead()
					} else {
						if _, err := r.ReadResponseHead(); err != nil {
							t.Fatal(err)
						}
						_, err = io.ReadAll(r)
					}
					var re *ResetError
					if !errors.As(err, &re) {
						t.Fatalf("got error %v (%T), want a *ResetError", err, err)
					}
					if re.Code != code || re.Message != m.want {
						t.Fatalf("got code %v message of %d bytes, want code %v message of %d bytes", re.Code, len(re.Message), code, len(m.want))
					}
					if !utf8.ValidString(re.Message) {
						t.Fatalf("message %q is not valid UTF-8", re.Message)
					}
					if !errors.Is(err, &ResetError{Code: code}) {
						t.Fatalf("errors.Is(err, &ResetError{Code: %v}): got false, want true", code)
					}
					if errors.Is(err, &ResetError{Code: code + 1}) {
						t.Fatalf("errors.Is(err, &ResetError{Code: %v}): got true, want false", code+1)
					}
					// The reset is sticky.
					if _, err2 := r.Read(make([]byte, 8)); err2 != err {
						t.Fatalf("Read after RESET: got %v, want the same %v", err2, err)
					}
				})
			}
		}
	}
}

func TestResetErrorStrings(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"no message", &ResetError{Code: CodeCancel}, "stream reset: cancel"},
		{"message", &ResetError{Code: CodeUpstreamError, Message: "eof"}, "stream reset: upstream_error: eof"},
		{"unknown code", &ResetError{Code: 42}, "stream reset: code_42"},
		{"source error", &SourceError{Err: io.ErrClosedPipe}, "reading body: io: read/write on closed pipe"},
		{"sink error", &SinkError{Err: io.ErrClosedPipe}, "writing body: io: read/write on closed pipe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFrameTypeString(t *testing.T) {
	tests := []struct {
		t    FrameType
		want string
	}{
		{FrameHead, "HEAD"}, {FrameData, "DATA"}, {FrameEnd, "END"}, {FrameReset, "RESET"},
		{FrameHello, "HELLO"}, {FrameWelcome, "WELCOME"}, {FramePing, "PING"}, {FramePong, "PONG"},
		{FrameGoAway, "GOAWAY"}, {0x00, "UNKNOWN(0x00)"}, {0xaf, "UNKNOWN(0xaf)"},
	}
	for _, tt := range tests {
		if got := tt.t.String(); got != tt.want {
			t.Errorf("FrameType(0x%02x).String(): got %q, want %q", byte(tt.t), got, tt.want)
		}
	}
}

func TestWriterOrder(t *testing.T) {
	req := &RequestHead{Method: "GET", Path: "/", ContentLength: -1}
	resp := &ResponseHead{Status: 200, ContentLength: -1}
	write := func(w *Writer) error { _, err := w.Write([]byte("x")); return err }
	readFrom := func(w *Writer) error { _, err := w.ReadFrom(strings.NewReader("x")); return err }
	head := func(w *Writer) error { return w.WriteRequestHead(req) }
	end := func(w *Writer) error { return w.End(nil) }
	reset := func(w *Writer) error { return w.Reset(CodeCancel, "") }
	tests := []struct {
		name  string
		setup []func(*Writer) error
		op    func(*Writer) error
	}{
		{"DATA before HEAD", nil, write},
		{"ReadFrom before HEAD", nil, readFrom},
		{"empty DATA before HEAD", nil, func(w *Writer) error { _, err := w.Write(nil); return err }},
		{"END before HEAD", nil, end},
		{"HEAD twice", []func(*Writer) error{head}, head},
		{"response HEAD after request HEAD", []func(*Writer) error{head}, func(w *Writer) error { return w.WriteResponseHead(resp) }},
		{"END twice", []func(*Writer) error{head, end}, end},
		{"DATA after END", []func(*Writer) error{head, end}, write},
		{"ReadFrom after END", []func(*Writer) error{head, end}, readFrom},
		{"HEAD after END", []func(*Writer) error{head, end}, head},
		{"HEAD after RESET", []func(*Writer) error{reset}, head},
		{"DATA after RESET", []func(*Writer) error{head, reset}, write},
		{"END after RESET", []func(*Writer) error{head, reset}, end},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wire bytes.Buffer
			w := NewWriter(&wire, Limits{})
			for _, op := range tt.setup {
				if err := op(w); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			before := wire.Len()
			checkErr(t, tt.op(w), ErrFrameOrder)
			if wire.Len() != before {
				t.Fatalf("wrote %d bytes on a rejected frame, want 0", wire.Len()-before)
			}
		})
	}
}

func TestWriterResetAfterEndWritesNothing(t *testing.T) {
	tests := []struct {
		name  string
		first func(*Writer) error
	}{
		{"after END", func(w *Writer) error { return w.End(nil) }},
		{"after RESET", func(w *Writer) error { return w.Reset(CodeUpstreamError, "first") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wire bytes.Buffer
			w := NewWriter(&wire, Limits{})
			if err := w.WriteResponseHead(&ResponseHead{Status: 200, ContentLength: -1}); err != nil {
				t.Fatal(err)
			}
			if err := tt.first(w); err != nil {
				t.Fatal(err)
			}
			before := wire.Len()
			if err := w.Reset(CodeCancel, "late"); err != nil {
				t.Fatalf("Reset: got %v, want nil", err)
			}
			if wire.Len() != before {
				t.Fatalf("Reset wrote %d bytes, want 0", wire.Len()-before)
			}
		})
	}
}

func TestWriterOversizedHeadWritesNothing(t *testing.T) {
	big := http.Header{"X-Big": {strings.Repeat("a", DefaultMaxHeadSize)}}
	tests := []struct {
		name string
		op   func(*Writer) error
	}{
		{"request head", func(w *Writer) error {
			return w.WriteRequestHead(&RequestHead{Method: "GET", Path: "/", Header: big})
		}},
		{"response head", func(w *Writer) error { return w.WriteResponseHead(&ResponseHead{Status: 200, Header: big}) }},
		{"trailers", func(w *Writer) error {
			if err := w.WriteResponseHead(&ResponseHead{Status: 200}); err != nil {
				return err
			}
			return w.End(big)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wire writeRecorder
			w := NewWriter(&wire, Limits{})
			err := tt.op(w)
			if err == nil || errors.Is(err, ErrFrameOrder) {
				t.Fatalf("got %v, want a size error", err)
			}
			for _, f := range splitFrames(t, wire.Bytes()) {
				if len(f.payload) > DefaultMaxHeadSize {
					t.Fatalf("wrote a %s frame of %d bytes, want none over %d", f.t, len(f.payload), DefaultMaxHeadSize)
				}
			}
			if w.Ended() {
				t.Fatal("Ended: got true, want false (the caller may still Reset)")
			}
		})
	}
}

// TestReaderErrors feeds malformed streams to a Reader. A stream that is cut
// short must give io.ErrUnexpectedEOF, never io.EOF: a cut body must not look
// complete.
func TestReaderErrors(t *testing.T) {
	small := Limits{MaxHeadSize: 1 << 10, MaxHeaderCount: 16, MaxDataSize: 1 << 10}
	data := rawFrame(FrameData, []byte("abc"))
	tests := []struct {
		name string
		side side
		lim  Limits
		in   []byte
		want error
	}{
		// Before the head.
		{"empty stream", requestSide, Limits{}, nil, io.ErrUnexpectedEOF},
		{"type byte only", requestSide, Limits{}, []byte{byte(FrameHead)}, io.ErrUnexpectedEOF},
		{"truncated frame length", requestSide, Limits{}, []byte{byte(FrameHead), 0x80}, io.ErrUnexpectedEOF},
		{"overlong frame length", requestSide, Limits{}, cat(byte(FrameHead), bytes.Repeat([]byte{0xff}, 10), byte(1)), ErrProtocol},
		{"head payload cut", requestSide, Limits{}, reqHeadFrame[:len(reqHeadFrame)-1], io.ErrUnexpectedEOF},
		{"head over the limit", requestSide, small, rawFrame(FrameHead, reqPayload(rawStr(99, strings.Repeat("x", 1<<10)))), ErrProtocol},
		{"DATA before HEAD", requestSide, Limits{}, cat(data, reqHeadFrame), ErrProtocol},
		{"END before HEAD", responseSide, Limits{}, endFrame, ErrProtocol},
		{"unknown frame type before HEAD", requestSide, Limits{}, rawFrame(0x7f, nil), ErrProtocol},
		{"HELLO on an exchange stream", requestSide, Limits{}, rawFrame(FrameHello, rawUint(tagHelloVersion, 1)), ErrProtocol},
		{"PING on an exchange stream", responseSide, Limits{}, rawFrame(FramePing, rawUint(tagPingID, 1)), ErrProtocol},
		{"RESET before HEAD", responseSide, Limits{}, rawReset(uint64(CodeRefused), "draining"), &ResetError{Code: CodeRefused}},
		{"RESET code 0", responseSide, Limits{}, rawReset(0, "zero"), ErrProtocol},
		{"RESET without code", responseSide, Limits{}, rawFrame(FrameReset, nil), ErrProtocol},
		{"RESET code beyond uint32", responseSide, Limits{}, rawReset(1<<32, ""), ErrProtocol},
		{"RESET code bad number", responseSide, Limits{}, rawFrame(FrameReset, rawField(tagResetCode, []byte{0x81})), ErrProtocol},
		{"RESET field length beyond payload", responseSide, Limits{}, rawFrame(FrameReset, cat(rawUint(tagResetCode, 1), uv(tagResetMessage), uv(9))), ErrProtocol},
		{"RESET over the limit", responseSide, Limits{}, rawFrame(FrameReset, cat(rawUint(tagResetCode, 1), rawStr(tagResetMessage, strings.Repeat("m", MaxResetSize)))), ErrProtocol},
		{"RESET payload cut", responseSide, Limits{}, rawReset(1, "abc")[:5], io.ErrUnexpectedEOF},
		{"invalid request head", requestSide, Limits{}, rawFrame(FrameHead, rawStr(tagReqMethod, "GET")), ErrProtocol},
		{"status 99", responseSide, Limits{}, rawFrame(FrameHead, rawUint(tagRespStatus, 99)), ErrProtocol},
		{"status 600", responseSide, Limits{}, rawFrame(FrameHead, rawUint(tagRespStatus, 600)), ErrProtocol},

		// In the body.
		{"ends after head", requestSide, Limits{}, reqHeadFrame, io.ErrUnexpectedEOF},
		{"ends after DATA without END", requestSide, Limits{}, cat(reqHeadFrame, data), io.ErrUnexpectedEOF},
		{"DATA payload cut", requestSide, Limits{}, cat(reqHeadFrame, data[:len(data)-1]), io.ErrUnexpectedEOF},
		{"DATA payload cut to nothing", requestSide, Limits{}, cat(reqHeadFrame, data[:2]), io.ErrUnexpectedEOF},
		{"DATA header cut", requestSide, Limits{}, cat(reqHeadFrame, byte(FrameData)), io.ErrUnexpectedEOF},
		{"DATA length truncated", requestSide, Limits{}, cat(reqHeadFrame, byte(FrameData), byte(0x80)), io.ErrUnexpectedEOF},
		{"empty DATA frame", requestSide, Limits{}, cat(reqHeadFrame, rawFrame(FrameData, nil), endFrame), ErrProtocol},
		{"DATA over the limit", requestSide, small, cat(reqHeadFrame, rawFrame(FrameData, pattern(1<<10+1)), endFrame), ErrProtocol},
		{"DATA over the default limit", requestSide, Limits{}, cat(reqHeadFrame, rawFrame(FrameData, pattern(DefaultMaxDataSize+1)), endFrame), ErrProtocol},
		{"HEAD in body", requestSide, Limits{}, cat(reqHeadFrame, reqHeadFrame, endFrame), ErrProtocol},
		{"HELLO in body", responseSide, Limits{}, cat(respHeadFrame, rawFrame(FrameHello, nil), endFrame), ErrProtocol},
		{"GOAWAY in body", responseSide, Limits{}, cat(respHeadFrame, rawFrame(FrameGoAway, nil), endFrame), ErrProtocol},
		{"unknown frame type in body", requestSide, Limits{}, cat(reqHeadFrame, rawFrame(0xee, nil), endFrame), ErrProtocol},
		{"END payload cut", responseSide, Limits{}, cat(respHeadFrame, rawFrame(FrameEnd, rawHeader(tagEndTrailer, "A", "b"))[:4]), io.ErrUnexpectedEOF},
		{"END over the limit", responseSide, small, cat(respHeadFrame, rawFrame(FrameEnd, rawHeader(tagEndTrailer, "A", strings.Repeat("b", 1<<10)))), ErrProtocol},
		{"END trailer value with CRLF", responseSide, Limits{}, cat(respHeadFrame, rawFrame(FrameEnd, rawHeader(tagEndTrailer, "A", "b\r\nC: d"))), ErrProtocol},
		{"END trailer name invalid", responseSide, Limits{}, cat(respHeadFrame, rawFrame(FrameEnd, rawHeader(tagEndTrailer, "A B", "c"))), ErrProtocol},
		{"END with too many trailers", responseSide, small, cat(respHeadFrame, rawFrame(FrameEnd, manyHeaders(tagEndTrailer, 17))), ErrProtocol},
		{"END truncated varint", responseSide, Limits{}, cat(respHeadFrame, rawFrame(FrameEnd, []byte{0x80})), ErrProtocol},
		{"RESET in body", responseSide, Limits{}, cat(respHeadFrame, data, rawReset(uint64(CodeUpstreamError), "eof")), &ResetError{Code: CodeUpstreamError}},
		{"RESET in body code 0", responseSide, Limits{}, cat(respHeadFrame, rawReset(0, "")), ErrProtocol},
		{"RESET in body cut", responseSide, Limits{}, cat(respHeadFrame, rawReset(1, "abc")[:4]), io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.in), tt.lim)
			var err error
			if tt.side == requestSide {
				_, err = r.ReadRequestHead()
			} else {
				_, err = r.ReadResponseHead()
			}
			if err == nil {
				buf := make([]byte, 64<<10)
				for err == nil {
					_, err = r.Read(buf)
				}
			}
			checkErr(t, err, tt.want)
			// The failure is sticky.
			if _, err2 := r.Read(make([]byte, 8)); err2 != err {
				t.Fatalf("Read after failure: got %v, want the same %v", err2, err)
			}
		})
	}
}

func TestReaderReadBeforeHead(t *testing.T) {
	r := NewReader(bytes.NewReader(cat(reqHeadFrame, endFrame)), Limits{})
	_, err := r.Read(make([]byte, 8))
	checkErr(t, err, ErrFrameOrder)
	// The misuse does not poison the stream.
	if _, err := r.ReadRequestHead(); err != nil {
		t.Fatalf("ReadRequestHead: got %v, want nil", err)
	}
	_, err = r.ReadRequestHead()
	checkErr(t, err, ErrFrameOrder)
}

// TestOverLimitFailsBeforeReading sends frame headers that claim more than
// the limit, from a peer that would really send the bytes. The Reader must
// reject the frame from its header alone: it reads no more than its first
// buffer fill and allocates nothing near the claimed size.
func TestOverLimitFailsBeforeReading(t *testing.T) {
	const huge = 1<<28 - 1 // the largest length a 4-byte frame header can claim
	tests := []struct {
		name    string
		side    side
		prefix  []byte // frames before the oversized one
		t       FrameType
		limit   int
		control bool
	}{
		{"HEAD", requestSide, nil, FrameHead, DefaultMaxHeadSize, false},
		{"RESET before HEAD", responseSide, nil, FrameReset, MaxResetSize, false},
		{"DATA before HEAD", requestSide, nil, FrameData, DefaultMaxDataSize, false},
		{"unknown type before HEAD", requestSide, nil, 0x7f, MaxControlSize, false},
		{"HELLO before HEAD", requestSide, nil, FrameHello, MaxControlSize, false},
		{"DATA", requestSide, reqHeadFrame, FrameData, DefaultMaxDataSize, false},
		{"END", responseSide, respHeadFrame, FrameEnd, DefaultMaxHeadSize, false},
		{"RESET in body", responseSide, respHeadFrame, FrameReset, MaxResetSize, false},
		{"control HELLO", 0, nil, FrameHello, MaxControlSize, true},
		{"control WELCOME", 0, nil, FrameWelcome, MaxControlSize, true},
		{"control PING", 0, rawFrame(FramePing, rawUint(tagPingID, 1)), FramePing, MaxControlSize, true},
		{"control PONG", 0, nil, FramePong, MaxControlSize, true},
		{"control GOAWAY", 0, nil, FrameGoAway, MaxControlSize, true},
		{"control unknown type", 0, nil, 0x7f, MaxControlSize, true},
		{"control HEAD", 0, nil, FrameHead, 0, true},
		{"control DATA", 0, nil, FrameData, 0, true},
		{"control RESET", 0, nil, FrameReset, MaxResetSize, true},
	}
	for _, tt := range tests {
		for _, claim := range []uint64{uint64(tt.limit) + 1, huge} {
			t.Run(fmt.Sprintf("%s/claim %d", tt.name, claim), func(t *testing.T) {
				src := &lazyReader{prefix: cat(tt.prefix, rawFrameHeader(tt.t, claim)), fill: 'a'}
				bufSize := int64(4 << 10)
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				var err error
				if tt.control {
					bufSize = 512
					cr := NewControlReader(src)
					for err == nil {
						_, err = cr.ReadMessage()
					}
				} else {
					_, _, err = readExchange(src, tt.side, Limits{})
				}
				runtime.ReadMemStats(&after)
				checkErr(t, err, ErrProtocol)
				if src.n > bufSize {
					t.Fatalf("read %d bytes from the peer, want at most one buffer (%d)", src.n, bufSize)
				}
				if got := after.TotalAlloc - before.TotalAlloc; got > 256<<10 {
					t.Fatalf("allocated %d bytes for a frame claiming %d, want under 256 KiB", got, claim)
				}
			})
		}
	}
}

// TestHeadAtTheLimit: a HEAD of exactly MaxHeadSize bytes is accepted.
func TestHeadAtTheLimit(t *testing.T) {
	lim := Limits{MaxHeadSize: 1 << 10}
	base := reqPayload()
	// Pad with an unknown field (skipped by the decoder) to exactly the limit.
	pad := 1<<10 - len(base) - 1 - 2 // tag 99 (1 byte), length (2 bytes)
	payload := cat(base, rawStr(99, strings.Repeat("p", pad)))
	if len(payload) != 1<<10 {
		t.Fatalf("payload: got %d bytes, want %d", len(payload), 1<<10)
	}
	_, _, err := readExchange(bytes.NewReader(cat(rawFrame(FrameHead, payload), endFrame)), requestSide, lim)
	if err != nil {
		t.Fatalf("got %v, want nil", err)
	}
	_, _, err = readExchange(bytes.NewReader(cat(rawFrame(FrameHead, cat(payload, byte(0))), endFrame)), requestSide, lim)
	checkErr(t, err, ErrProtocol)
}

// TestReaderLimitBelowWriter: a reader with a smaller DATA limit than its
// peer's writer rejects the peer's frames.
func TestReaderLimitBelowWriter(t *testing.T) {
	var wire bytes.Buffer
	w := NewWriter(&wire, Limits{})
	if err := w.WriteRequestHead(&RequestHead{Method: "POST", Path: "/"}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pattern(2 << 10)); err != nil {
		t.Fatal(err)
	}
	if err := w.End(nil); err != nil {
		t.Fatal(err)
	}
	_, _, err := readExchange(&wire, requestSide, Limits{MaxDataSize: 1 << 10})
	checkErr(t, err, ErrProtocol)
}

// readFrames reads the body from r, one Read per DATA frame of the sizes in
// frames, then checks that the next Read ends the body at END.
func readFrames(t *testing.T, r *Reader, frames []int) []byte {
	t.Helper()
	buf := make([]byte, 1<<20)
	var body []byte
	for _, want := range frames {
		n, err := r.Read(buf)
		if err != nil || n != want {
			t.Fatalf("Read: got (%d, %v), want one frame (%d, nil)", n, err, want)
		}
		body = append(body, buf[:n]...)
	}
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read at END: got (%d, %v), want (0, EOF)", n, err)
	}
	return body
}

// waitingSource is a chunkSource that can wait for its next bytes: it
// records, before each read, whether WaitReadable was called since the last
// one.
type waitingSource struct {
	chunkSource
	waited  bool
	waits   []bool // per Read: whether it followed a WaitReadable
	waitErr error
}

func (s *waitingSource) WaitReadable() error {
	s.waited = true
	return s.waitErr
}

func (s *waitingSource) Read(p []byte) (int, error) {
	s.waits = append(s.waits, s.waited)
	s.waited = false
	return s.chunkSource.Read(p)
}

// TestReadFromWaitsWithoutBuffer checks that ReadFrom lets a source that
// can wait (an upstream body) wait before every read that may block, the
// first one and each after a read that did not fill the buffer, and only
// then, so that an idle stream holds no copy buffer while a bulk copy goes
// on reading into full buffers; and that a failed wait ends the copy as a
// source error.
func TestReadFromWaitsWithoutBuffer(t *testing.T) {
	src := &waitingSource{chunkSource: chunkSource{chunks: [][]byte{
		pattern(100), pattern(SmallBufferSize), pattern(4096), pattern(CopyBufferSize), pattern(5),
	}}}
	w := NewWriter(io.Discard, Limits{})
	if err := w.WriteRequestHead(&RequestHead{Method: "POST", Path: "/", ContentLength: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ReadFrom(src); err != nil {
		t.Fatal(err)
	}
	// Reads: 100 (after the first wait), 2 KiB (after a short read), 4 KiB
	// and 32 KiB and 5 (each after a long one), EOF (after a short one).
	if want := []bool{true, true, false, false, false, true}; !reflect.DeepEqual(src.waits, want) {
		t.Errorf("waited before reads: got %v, want %v", src.waits, want)
	}

	errWait := errors.New("upstream gone")
	src = &waitingSource{waitErr: errWait}
	w = NewWriter(io.Discard, Limits{})
	if err := w.WriteRequestHead(&RequestHead{Method: "POST", Path: "/", ContentLength: -1}); err != nil {
		t.Fatal(err)
	}
	_, err := w.ReadFrom(src)
	var se *SourceError
	if !errors.As(err, &se) || !errors.Is(err, errWait) {
		t.Errorf("failed wait: got %v, want a *SourceError wrapping %v", err, errWait)
	}
}
