package proto

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// flushRecorder records the writes and flushes a Reader.WriteTo makes, in
// order: "w:<bytes>" per Write, "flush" per Flush. A write fails with
// writeErr once failAfter writes have succeeded (failAfter < 0: never).
type flushRecorder struct {
	events    []string
	writeErr  error
	failAfter int
	flushErr  error
	short     bool // accept one byte less than given
}

func (f *flushRecorder) Write(p []byte) (int, error) {
	if f.failAfter == 0 {
		return 0, f.writeErr
	}
	f.failAfter--
	if f.short {
		p = p[:len(p)-1]
	}
	f.events = append(f.events, "w:"+string(p))
	return len(p), nil
}

func (f *flushRecorder) Flush() error {
	f.events = append(f.events, "flush")
	return f.flushErr
}

// TestWriteTo checks what Reader.WriteTo writes and flushes for frames
// that arrive in bursts (one burst per read of the stream), and how it ends.
func TestWriteTo(t *testing.T) {
	errSink := errors.New("client gone")
	data := func(s string) []byte { return rawFrame(FrameData, []byte(s)) }
	tests := []struct {
		name   string
		bursts [][]byte // after the head, each in one read of the stream
		sink   flushRecorder
		want   []string
		wantN  int64
		err    error // nil, or what errors.Is must match
		sinkOK bool  // err comes from the sink, as a *SinkError
	}{
		{
			name:   "frames then END in one burst",
			bursts: [][]byte{cat(data("a"), data("b"), endFrame)},
			want:   []string{"w:a", "w:b"}, // END was at hand: nothing waits
			wantN:  2,
		},
		{
			name:   "three frames together are flushed once",
			bursts: [][]byte{cat(data("a"), data("b"), data("c")), endFrame},
			want:   []string{"w:a", "w:b", "w:c", "flush"},
			wantN:  3,
		},
		{
			name:   "frames apart are flushed each",
			bursts: [][]byte{data("a"), data("b"), data("c"), endFrame},
			want:   []string{"w:a", "flush", "w:b", "flush", "w:c", "flush"},
			wantN:  3,
		},
		{
			name:   "a frame split across bursts is written whole",
			bursts: [][]byte{cat(rawFrameHeader(FrameData, 4), "ab"), []byte("cd"), endFrame},
			want:   []string{"w:abcd", "flush"},
			wantN:  4,
		},
		{
			name:   "RESET",
			bursts: [][]byte{data("a"), rawReset(uint64(CodeUpstreamError), "upstream died")},
			want:   []string{"w:a", "flush"},
			wantN:  1,
			err:    &ResetError{Code: CodeUpstreamError},
		},
		{
			name:   "protocol error",
			bursts: [][]byte{data("a"), respHeadFrame},
			want:   []string{"w:a", "flush"},
			wantN:  1,
			err:    ErrProtocol,
		},
		{
			name:   "stream cut without END",
			bursts: [][]byte{data("a")},
			want:   []string{"w:a", "flush"},
			wantN:  1,
			err:    io.ErrUnexpectedEOF,
		},
		{
			name:   "write error",
			bursts: [][]byte{data("a"), data("b"), endFrame},
			sink:   flushRecorder{writeErr: errSink, failAfter: 1},
			want:   []string{"w:a", "flush"},
			wantN:  1,
			err:    errSink,
			sinkOK: true,
		},
		{
			name:   "flush error",
			bursts: [][]byte{data("a"), endFrame},
			sink:   flushRecorder{flushErr: errSink},
			want:   []string{"w:a", "flush"},
			wantN:  1,
			err:    errSink,
			sinkOK: true,
		},
		{
			name:   "short write",
			bursts: [][]byte{data("ab"), endFrame},
			sink:   flushRecorder{short: true},
			want:   []string{"w:a"},
			wantN:  1,
			err:    io.ErrShortWrite,
			sinkOK: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(&chunkSource{chunks: append([][]byte{respHeadFrame}, tt.bursts...)}, Limits{})
			if _, err := r.ReadResponseHead(); err != nil {
				t.Fatal(err)
			}
			sink := tt.sink
			if sink.writeErr == nil {
				sink.failAfter = -1
			}
			n, err := r.WriteTo(&sink)
			checkErr(t, err, tt.err)
			var se *SinkError
			if got := errors.As(err, &se); got != tt.sinkOK {
				t.Errorf("got error %v (%T), want a *SinkError: %v", err, err, tt.sinkOK)
			}
			if n != tt.wantN {
				t.Errorf("got n = %d, want %d", n, tt.wantN)
			}
			if !reflect.DeepEqual(sink.events, tt.want) {
				t.Errorf("got %q, want %q", sink.events, tt.want)
			}
		})
	}
}

// TestWriteToWithoutFlush checks a destination without Flush, reached
// through io.Copy, and a body larger than the small buffer.
func TestWriteToWithoutFlush(t *testing.T) {
	body := pattern(3*CopyBufferSize + 5)
	var wire bytes.Buffer
	w := NewWriter(&wire, Limits{})
	if err := w.WriteResponseHead(&ResponseHead{Status: 200, ContentLength: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.End(nil); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&wire, Limits{})
	if _, err := r.ReadResponseHead(); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	n, err := io.Copy(&got, r)
	if err != nil || n != int64(len(body)) {
		t.Fatalf("io.Copy: got (%d, %v), want (%d, nil)", n, err, len(body))
	}
	if got.String() != string(body) {
		t.Error("body: got different bytes, want the writer's")
	}
}

// TestWriteToBeforeHead: the body cannot be copied before the head is read.
func TestWriteToBeforeHead(t *testing.T) {
	r := NewReader(bytes.NewReader(respHeadFrame), Limits{})
	if _, err := r.WriteTo(io.Discard); !errors.Is(err, ErrFrameOrder) {
		t.Fatalf("got %v, want ErrFrameOrder", err)
	}
}

func BenchmarkWriteTo1M(b *testing.B) {
	const frames, size = 32, 32 << 10
	wire := bytes.Clone(respHeadFrame)
	for range frames {
		wire = append(wire, rawFrame(FrameData, pattern(size))...)
	}
	wire = append(wire, endFrame...)
	src := bytes.NewReader(nil)
	b.SetBytes(frames * size)
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(wire)
		r := NewReader(src, Limits{})
		if _, err := r.ReadResponseHead(); err != nil {
			b.Fatal(err)
		}
		if n, err := r.WriteTo(io.Discard); n != frames*size || err != nil {
			b.Fatalf("WriteTo: got (%d, %v), want (%d, nil)", n, err, frames*size)
		}
	}
}
