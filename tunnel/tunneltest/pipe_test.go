package tunneltest

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/airlock-proxy/airlock/proto"
)

func TestPipeReadDeadline(t *testing.T) {
	a, b := Pipe()
	defer a.Close()
	defer b.Close()

	// Nothing written: the Read waits until the deadline.
	b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with nothing written: got %v, want os.ErrDeadlineExceeded", err)
	}
	// A deadline in the past fails a Read at once.
	b.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: got %v, want os.ErrDeadlineExceeded", err)
	}

	// A waiting Read sees the deadline moved, and cleared.
	read := make(chan error, 1)
	buf := make([]byte, 5)
	b.SetReadDeadline(time.Now().Add(time.Hour))
	go func() {
		_, err := io.ReadFull(b, buf)
		read <- err
	}()
	b.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if err := <-read; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with its deadline moved closer: got %v, want os.ErrDeadlineExceeded", err)
	}
	b.SetReadDeadline(time.Time{})
	go func() {
		_, err := io.ReadFull(b, buf)
		read <- err
	}()
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil || string(buf) != "hello" {
		t.Fatalf("Read without a deadline: got %q, %v", buf, err)
	}
}

func TestPipeEnds(t *testing.T) {
	// CloseWrite: the peer reads io.EOF; the other direction goes on.
	a, b := Pipe()
	go func() {
		a.Write([]byte("hi"))
		a.CloseWrite()
	}()
	if got, err := io.ReadAll(b); err != nil || string(got) != "hi" {
		t.Fatalf("ReadAll: got %q, %v; want \"hi\", nil", got, err)
	}
	go io.ReadAll(a)
	if _, err := b.Write([]byte("back")); err != nil {
		t.Fatalf("Write after the peer's CloseWrite: %v", err)
	}
	if a.Context().Err() == nil || b.Context().Err() != nil {
		t.Error("CloseWrite ends the closing end's context only")
	}
	a.Close()
	b.Close()

	// Abort: the peer's Read and Write fail with the code, its context
	// ends, and the aborting end's own calls fail with ErrLocalAbort.
	a, b = Pipe()
	a.Abort(proto.CodeCancel)
	var rst *proto.ResetError
	if _, err := b.Read(make([]byte, 1)); !errors.As(err, &rst) || rst.Code != proto.CodeCancel {
		t.Errorf("peer's Read after Abort: got %v, want a reset with code cancel", err)
	}
	if _, err := b.Write([]byte("x")); !errors.As(err, &rst) || rst.Code != proto.CodeCancel {
		t.Errorf("peer's Write after Abort: got %v, want a reset with code cancel", err)
	}
	if b.Context().Err() == nil {
		t.Error("peer's context is live after Abort")
	}
	a.SetReadDeadline(time.Time{})
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, ErrLocalAbort) {
		t.Errorf("Read after own Abort: got %v, want ErrLocalAbort", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, ErrLocalAbort) {
		t.Errorf("Write after own Abort: got %v, want ErrLocalAbort", err)
	}
}
