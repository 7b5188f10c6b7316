package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// target is one base URL under test and the API key it takes.
type target struct {
	// Name is "direct", "nginx" or "airlock".
	Name string
	// BaseURL is the OpenAI-style base URL, ending in "/v1".
	BaseURL string
	// Key is sent as "Authorization: Bearer <Key>".
	Key string
}

// request builds a request for path (below the base URL, starting with
// "/") with the target's key.
func (t target) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(t.BaseURL, "/")+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	req.Header.Set("Authorization", "Bearer "+t.Key)
	return req, nil
}

// newClient returns a client whose transport keeps up to conns idle
// connections to one host, never asks for compression (so bytes are counted
// as sent) and never uses a proxy from the environment.
func newClient(conns int) *http.Client {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ResponseHeaderTimeout: 30 * time.Second,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        64 << 10,
	}
	return &http.Client{Transport: tr}
}

// closeClient closes the client's idle connections.
func closeClient(c *http.Client) { c.CloseIdleConnections() }

// statusError is an answer with an unexpected status.
type statusError struct {
	Status string
	Body   string
}

func (e *statusError) Error() string {
	if e.Body == "" {
		return "status " + e.Status
	}
	return fmt.Sprintf("status %s: %s", e.Status, e.Body)
}

// checkStatus returns nil for 200, else a statusError with the start of the
// body (error JSON from the test upstream or airlock, never a secret), and
// closes the body.
func checkStatus(resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return &statusError{Status: resp.Status, Body: strings.TrimSpace(string(b))}
}

// drain reads the rest of resp's body and closes it, so the connection can
// be reused. It returns the byte count.
func drain(resp *http.Response) (int64, error) {
	n, err := io.Copy(io.Discard, resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// do sends a small request, checks for 200 and drains the answer.
func do(ctx context.Context, c *http.Client, t target, r smallRequest) error {
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := t.request(ctx, r.Method, r.Path, body)
	if err != nil {
		return err
	}
	if r.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	if err := checkStatus(resp); err != nil {
		return err
	}
	_, err = drain(resp)
	return err
}
