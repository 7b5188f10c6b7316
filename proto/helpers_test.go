package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"testing"
)

// The builders below spell the wire format out byte by byte, independently of
// the encoders under test, so that a test can send what no Writer would.

// uv returns v as a uvarint.
func uv(v uint64) []byte { return binary.AppendUvarint(nil, v) }

// cat concatenates byte slices and strings.
func cat(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case []byte:
			b = append(b, p...)
		case string:
			b = append(b, p...)
		case byte:
			b = append(b, p)
		default:
			panic("cat: unsupported part")
		}
	}
	return b
}

// rawFrame returns type · uvarint length · payload.
func rawFrame(t FrameType, payload []byte) []byte {
	return cat(byte(t), uv(uint64(len(payload))), payload)
}

// rawFrameHeader returns a frame header that claims n bytes of payload.
func rawFrameHeader(t FrameType, n uint64) []byte { return cat(byte(t), uv(n)) }

// rawField returns tag · uvarint length · value.
func rawField(tag uint64, v []byte) []byte { return cat(uv(tag), uv(uint64(len(v))), v) }

func rawStr(tag uint64, s string) []byte { return rawField(tag, []byte(s)) }

func rawUint(tag, v uint64) []byte { return rawField(tag, uv(v)) }

// rawHeader returns one header field: uvarint name length · name · value.
func rawHeader(tag uint64, name, value string) []byte {
	return rawField(tag, cat(uv(uint64(len(name))), name, value))
}

// reqPayload is a valid "GET /" request head followed by extra fields.
func reqPayload(extra ...[]byte) []byte {
	b := cat(rawStr(tagReqMethod, "GET"), rawStr(tagReqPath, "/"))
	for _, e := range extra {
		b = append(b, e...)
	}
	return b
}

// respPayload is a valid status 200 response head followed by extra fields.
func respPayload(extra ...[]byte) []byte {
	b := rawUint(tagRespStatus, 200)
	for _, e := range extra {
		b = append(b, e...)
	}
	return b
}

// manyHeaders returns n header fields X-H-0000, X-H-0001, ...
func manyHeaders(tag uint64, n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, rawHeader(tag, "X-H-"+itoa4(i), "v")...)
	}
	return b
}

func itoa4(i int) string {
	return string([]byte{byte('0' + i/1000%10), byte('0' + i/100%10), byte('0' + i/10%10), byte('0' + i%10)})
}

func rawReset(code uint64, msg string) []byte {
	b := rawUint(tagResetCode, code)
	if msg != "" {
		b = append(b, rawStr(tagResetMessage, msg)...)
	}
	return rawFrame(FrameReset, b)
}

var (
	reqHeadFrame  = rawFrame(FrameHead, reqPayload())
	respHeadFrame = rawFrame(FrameHead, respPayload())
	endFrame      = rawFrame(FrameEnd, nil)
)

// frameRec is one frame split out of wire bytes.
type frameRec struct {
	t       FrameType
	payload []byte
}

// splitFrames splits well-formed wire bytes into frames.
func splitFrames(t *testing.T, b []byte) []frameRec {
	t.Helper()
	var out []frameRec
	for len(b) > 0 {
		ft := FrameType(b[0])
		n, k := binary.Uvarint(b[1:])
		if k <= 0 || uint64(len(b)-1-k) < n {
			t.Fatalf("splitFrames: malformed frame at %d bytes from the end", len(b))
		}
		b = b[1+k:]
		out = append(out, frameRec{ft, b[:n]})
		b = b[n:]
	}
	return out
}

// dataSizes returns the payload sizes of the DATA frames among frames.
func dataSizes(frames []frameRec) []int {
	var sizes []int
	for _, f := range frames {
		if f.t == FrameData {
			sizes = append(sizes, len(f.payload))
		}
	}
	return sizes
}

type side int

const (
	requestSide side = iota
	responseSide
)

// readExchange reads a whole direction from in: the head for side s, then
// the body until an error. A clean END gives a nil error.
func readExchange(in io.Reader, s side, lim Limits) (body []byte, trailer http.Header, err error) {
	r := NewReader(in, lim)
	if s == requestSide {
		_, err = r.ReadRequestHead()
	} else {
		_, err = r.ReadResponseHead()
	}
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		body = append(body, buf[:n]...)
		if err == io.EOF {
			return body, r.Trailer(), nil
		}
		if err != nil {
			return body, nil, err
		}
	}
}

// lazyReader yields prefix, then fill bytes forever, counting what it gave.
// It stands for a peer that would really send a frame's claimed payload.
type lazyReader struct {
	prefix []byte
	fill   byte
	n      int64
}

func (r *lazyReader) Read(p []byte) (int, error) {
	n := copy(p, r.prefix)
	r.prefix = r.prefix[n:]
	for i := n; i < len(p); i++ {
		p[i] = r.fill
	}
	r.n += int64(len(p))
	return len(p), nil
}

// cyclicReader repeats b forever.
type cyclicReader struct {
	b   []byte
	off int
}

func (r *cyclicReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.b[r.off:])
		n += c
		r.off = (r.off + c) % len(r.b)
	}
	return n, nil
}

// chunkSource returns its chunks one per Read, then io.EOF (or err). Before
// each Read after the first it calls beforeRead with the chunk index.
type chunkSource struct {
	chunks     [][]byte
	i          int
	err        error
	beforeRead func(i int)
}

func (s *chunkSource) Read(p []byte) (int, error) {
	if s.i >= len(s.chunks) {
		if s.err != nil {
			return 0, s.err
		}
		return 0, io.EOF
	}
	if s.beforeRead != nil {
		s.beforeRead(s.i)
	}
	c := s.chunks[s.i]
	if len(c) > len(p) {
		s.chunks[s.i] = c[len(p):]
		return copy(p, c), nil
	}
	s.i++
	return copy(p, c), nil
}

// writeRecorder records every Write call separately.
type writeRecorder struct {
	bytes.Buffer
	calls int
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.calls++
	return w.Buffer.Write(p)
}

// failWriter fails every Write.
type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// pattern returns n deterministic bytes.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// checkErr fails t unless err matches want: nil, or errors.Is(err, want).
// A *ResetError want matches by code. io.EOF is never an acceptable stand-in
// for io.ErrUnexpectedEOF.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("got error %v, want nil", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got nil error, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want errors.Is %v", err, want)
	}
	if want != io.EOF && errors.Is(err, io.EOF) {
		t.Fatalf("got error %v that is io.EOF, want %v", err, want)
	}
	if re := (*ResetError)(nil); errors.As(want, &re) {
		var got *ResetError
		if !errors.As(err, &got) {
			t.Fatalf("got error %v (%T), want a *ResetError", err, err)
		}
	}
}
