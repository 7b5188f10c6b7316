//go:build !unix

package http1

// open reports whether c still looks usable after resting in the pool.
// Without a non-blocking peek, it is taken to be; a request without a body
// that meets a closed connection is sent again (RoundTrip).
func (c *conn) open() bool { return true }
