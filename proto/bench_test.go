package proto

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// dataReader returns a Reader past a request head, on an endless stream of
// DATA frames of size bytes each.
func dataReader(t testing.TB, size int) *Reader {
	t.Helper()
	r := NewReader(io.MultiReader(bytes.NewReader(reqHeadFrame), &cyclicReader{b: rawFrame(FrameData, pattern(size))}), Limits{})
	if _, err := r.ReadRequestHead(); err != nil {
		t.Fatal(err)
	}
	return r
}

// dataWriter returns a Writer past a request head, on io.Discard.
func dataWriter(t testing.TB) *Writer {
	t.Helper()
	w := NewWriter(io.Discard, Limits{})
	if err := w.WriteRequestHead(&RequestHead{Method: "POST", Path: "/", ContentLength: -1}); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestReadDataDoesNotAllocate(t *testing.T) {
	for _, size := range []int{100, 32 << 10} {
		r := dataReader(t, size)
		buf := make([]byte, size)
		read := func() {
			if n, err := r.Read(buf); n != size || err != nil {
				t.Fatalf("Read: got (%d, %v), want (%d, nil)", n, err, size)
			}
		}
		for range 10 {
			read() // warm up
		}
		if got := testing.AllocsPerRun(100, read); got > 0 {
			t.Errorf("DATA of %d bytes: got %v allocs per Read, want 0", size, got)
		}
	}
}

// TestWriteDataDoesNotAllocate: DATA is the hot path of every body, so a
// Write must not allocate once the Writer's scratch buffer has grown.
func TestWriteDataDoesNotAllocate(t *testing.T) {
	for _, size := range []int{100, 4 << 10, 32 << 10} {
		w := dataWriter(t)
		p := pattern(size)
		write := func() {
			if n, err := w.Write(p); n != size || err != nil {
				t.Fatalf("Write: got (%d, %v), want (%d, nil)", n, err, size)
			}
		}
		write() // grow the scratch buffer
		if got := testing.AllocsPerRun(100, write); got > 0 {
			t.Errorf("DATA of %d bytes: got %v allocs per Write, want 0", size, got)
		}
	}
}

func TestReadFromAllocs(t *testing.T) {
	w := dataWriter(t)
	src := bytes.NewReader(nil)
	p := pattern(32 << 10)
	got := testing.AllocsPerRun(100, func() {
		src.Reset(p)
		if n, err := w.ReadFrom(src); n != int64(len(p)) || err != nil {
			t.Fatalf("ReadFrom: got (%d, %v), want (%d, nil)", n, err, len(p))
		}
	})
	t.Logf("Writer.ReadFrom of 32 KiB: %v allocs per call", got)
}

func BenchmarkWriteData32K(b *testing.B) {
	w := dataWriter(b)
	p := pattern(32 << 10)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.Write(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadData32K(b *testing.B) {
	const size = 32 << 10
	r := dataReader(b, size)
	buf := make([]byte, size)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if n, err := r.Read(buf); n != size || err != nil {
			b.Fatalf("Read: got (%d, %v), want (%d, nil)", n, err, size)
		}
	}
}

// sdkHead is a request head as an OpenAI SDK's request makes it.
var sdkHead = &RequestHead{
	Method: "POST",
	Path:   "/chat/completions",
	Header: http.Header{
		"Content-Type":     {"application/json"},
		"Accept":           {"text/event-stream"},
		"Accept-Encoding":  {"gzip, deflate"},
		"User-Agent":       {"OpenAI/Python 1.54.0"},
		"X-Stainless-Os":   {"Linux"},
		"X-Stainless-Arch": {"x64"},
		"Openai-Beta":      {"assistants=v2"},
		"Traceparent":      {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	},
	RequestID:     "req-01HZXAMPLE",
	Upstream:      "openai",
	Client:        "alice",
	ContentLength: 1843,
}

func BenchmarkRequestHeadRoundTrip(b *testing.B) {
	var p []byte
	b.ReportAllocs()
	for b.Loop() {
		p = AppendRequestHead(p[:0], sdkHead)
		if _, err := DecodeRequestHead(p, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(p)))
}

// A head's strings share one copy of its payload, and its header values
// one backing array: decoding an SDK's head of eight fields takes the head,
// the string, the map and the values (issue 9; 32 allocations before).
func TestDecodeHeadAllocations(t *testing.T) {
	p := AppendRequestHead(nil, sdkHead)
	got := testing.AllocsPerRun(100, func() {
		if _, err := DecodeRequestHead(p, Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	if got > 5 {
		t.Errorf("DecodeRequestHead: %v allocations, want at most 5", got)
	}
}
