package proto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestReaderReady checks that Ready is true exactly when the next Read can be
// answered from what is already buffered.
func TestReaderReady(t *testing.T) {
	head := rawFrame(FrameHead, respPayload())
	tests := []struct {
		name  string
		after []byte // bytes that arrive in the same write as the head
		want  bool
	}{
		{"nothing more", nil, false},
		{"frame type only", []byte{byte(FrameData)}, false},
		{"DATA header without payload", rawFrameHeader(FrameData, 10), false},
		{"DATA header and one payload byte", cat(rawFrameHeader(FrameData, 10), []byte{'x'}), true},
		{"whole DATA frame", rawFrame(FrameData, []byte("event")), true},
		{"whole END", rawFrame(FrameEnd, nil), true},
		{"END with part of its trailers", cat(rawFrameHeader(FrameEnd, 40), rawHeader(tagEndTrailer, "X", "y")), false},
		{"whole RESET", rawFrame(FrameReset, rawReset(uint64(CodeUpstreamError), "cut")), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			go func() {
				pw.Write(cat(head, tt.after)) // one write: one buffer fill
			}()
			defer pr.Close()
			r := NewReader(pr, Limits{})
			if _, err := r.ReadResponseHead(); err != nil {
				t.Fatal(err)
			}
			if got := r.Ready(); got != tt.want {
				t.Errorf("Ready() = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestReaderReadyWithinFrame checks Ready in the middle of a DATA frame and
// after the direction ended.
func TestReaderReadyWithinFrame(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		pw.Write(cat(rawFrame(FrameHead, respPayload()), rawFrame(FrameData, []byte("abcdef")), rawFrame(FrameEnd, nil)))
		pw.Close()
	}()
	r := NewReader(pr, Limits{})
	if _, err := r.ReadResponseHead(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if n, err := r.Read(buf); n != 2 || err != nil {
		t.Fatalf("Read: got %d, %v", n, err)
	}
	if !r.Ready() {
		t.Error("Ready() = false with 4 bytes of the frame buffered, want true")
	}
	io.Copy(io.Discard, r)
	if !r.Ready() {
		t.Error("Ready() = false after END, want true: Read answers io.EOF at once")
	}
}

// TestWriteWholeRequest checks that a request's head, body and END are one
// Write and read back as they were written, with and without a body, and
// with a body of several DATA frames.
func TestWriteWholeRequest(t *testing.T) {
	lim := Limits{MaxDataSize: 16}
	for _, body := range []string{"", "{}", strings.Repeat("0123456789", 5)} {
		rec := &writeRecorder{}
		w := NewWriter(rec, lim)
		want := &RequestHead{Method: "POST", Path: "/chat/completions", RequestID: "r1", ContentLength: int64(len(body))}
		if err := w.WriteWholeRequest(want, []byte(body)); err != nil {
			t.Fatal(err)
		}
		if rec.calls != 1 {
			t.Fatalf("body %q: got %d writes, want 1", body, rec.calls)
		}
		if !w.Ended() {
			t.Error("Ended() = false after END")
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Error("Write after END succeeded, want ErrFrameOrder")
		}
		r := NewReader(bytes.NewReader(rec.Bytes()), lim)
		got, err := r.ReadRequestHead()
		if err != nil {
			t.Fatal(err)
		}
		if got.Method != want.Method || got.Path != want.Path || got.RequestID != want.RequestID || got.ContentLength != want.ContentLength {
			t.Errorf("got head %+v, want %+v", got, want)
		}
		if b, err := io.ReadAll(r); string(b) != body || err != nil {
			t.Errorf("body: got %q, %v; want %q, nil", b, err, body)
		}
	}
	rec := &writeRecorder{}
	w := NewWriter(rec, Limits{})
	head := &RequestHead{Method: "GET", Path: "/models"}
	w.WriteRequestHead(head)
	if err := w.WriteWholeRequest(head, nil); !errors.Is(err, ErrFrameOrder) {
		t.Errorf("second head: got %v, want ErrFrameOrder", err)
	}
}
