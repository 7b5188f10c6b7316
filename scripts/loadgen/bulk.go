package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// bulkResult is what the bulk scenario measured: single-stream transfer
// rates in bytes per second.
type bulkResult struct {
	Upload   float64
	Download float64
}

// measureBulk warms one connection up with a small transfer each way, then
// times one upload and one download of size bytes.
func measureBulk(ctx context.Context, t target, size int64) (bulkResult, error) {
	c := newClient(1)
	defer closeClient(c)
	warm := min(size, 4<<20)
	if _, err := upload(ctx, c, t, warm); err != nil {
		return bulkResult{}, fmt.Errorf("warm-up upload: %w", err)
	}
	if _, err := download(ctx, c, t, warm); err != nil {
		return bulkResult{}, fmt.Errorf("warm-up download: %w", err)
	}
	up, err := upload(ctx, c, t, size)
	if err != nil {
		return bulkResult{}, fmt.Errorf("upload: %w", err)
	}
	down, err := download(ctx, c, t, size)
	if err != nil {
		return bulkResult{}, fmt.Errorf("download: %w", err)
	}
	return bulkResult{Upload: rate(float64(size), up), Download: rate(float64(size), down)}, nil
}

// upload POSTs size bytes to /airlock-test/upload with a known length and
// checks that the upstream counted them all. It returns the time from
// sending the request until the answer was read.
func upload(ctx context.Context, c *http.Client, t target, size int64) (time.Duration, error) {
	req, err := t.request(ctx, "POST", "/airlock-test/upload", &patternReader{left: size})
	if err != nil {
		return 0, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	if err := checkStatus(resp); err != nil {
		return 0, err
	}
	var got struct {
		Bytes int64 `json:"bytes"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&got)
	if _, derr := drain(resp); err == nil {
		err = derr
	}
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("reading the answer: %w", err)
	}
	if got.Bytes != size {
		return 0, fmt.Errorf("upstream counted %d bytes, want %d", got.Bytes, size)
	}
	return elapsed, nil
}

// download GETs /airlock-test/download?bytes=size, reads the body into a
// discarding buffer and checks its length. It returns the time from sending
// the request until the last byte arrived.
func download(ctx context.Context, c *http.Client, t target, size int64) (time.Duration, error) {
	req, err := t.request(ctx, "GET", "/airlock-test/download?bytes="+strconv.FormatInt(size, 10), nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	if err := checkStatus(resp); err != nil {
		return 0, err
	}
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(discard{}, resp.Body, buf)
	resp.Body.Close()
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("after %d bytes: %w", n, err)
	}
	if n != size {
		return 0, fmt.Errorf("got %d bytes, want %d", n, size)
	}
	return elapsed, nil
}

// discard is io.Discard without ReadFrom, so io.CopyBuffer uses the given
// large buffer instead of io.Discard's small pooled one.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// patternBlock is the repeating content of upload bodies. Its bytes are not
// all equal so that nothing on the path can shortcut them.
var patternBlock = func() []byte {
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

// patternReader yields left bytes of patternBlock, repeated, costing the
// client only a copy per Read.
type patternReader struct {
	left int64
	off  int
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := 0
	for n < len(p) {
		c := copy(p[n:], patternBlock[r.off:])
		n += c
		r.off = (r.off + c) % len(patternBlock)
	}
	r.left -= int64(n)
	return n, nil
}
