package logbuf

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for the flusher and the test at once.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuffer) snapshot() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String(), s.writes
}

func TestLinesAreBatchedAndFlushedWithinTheInterval(t *testing.T) {
	var out syncBuffer
	w := New(&out, 20*time.Millisecond)
	defer w.Close()
	for range 100 {
		w.Write([]byte("a line\n"))
	}
	if got, _ := out.snapshot(); got != "" {
		t.Fatalf("got %d bytes written at once, want them held until the interval", len(got))
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, writes := out.snapshot()
		if len(got) == 700 {
			if writes != 1 {
				t.Errorf("100 lines took %d writes, want 1", writes)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d bytes 2s later, want all 700 within the interval", len(got))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCloseFlushesAndLaterWritesGoThrough(t *testing.T) {
	var out syncBuffer
	w := New(&out, time.Hour)
	w.Write([]byte("before\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got, _ := out.snapshot(); got != "before\n" {
		t.Fatalf("after Close got %q, want the buffered line", got)
	}
	w.Write([]byte("after\n"))
	if got, _ := out.snapshot(); got != "before\nafter\n" {
		t.Fatalf("got %q, want the late line written at once", got)
	}
}

func TestConcurrentWritesKeepLinesWhole(t *testing.T) {
	var out syncBuffer
	w := New(&out, time.Millisecond)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				w.Write([]byte("0123456789\n"))
			}
		})
	}
	wg.Wait()
	w.Close()
	got, _ := out.snapshot()
	for i, line := range bytes.Split([]byte(got), []byte("\n")) {
		if len(line) != 0 && string(line) != "0123456789" {
			t.Fatalf("line %d = %q, want whole lines", i, line)
		}
	}
	if len(got) != 8*200*11 {
		t.Fatalf("got %d bytes, want %d", len(got), 8*200*11)
	}
}
