//go:build !linux

package http1

// hangups has no shared watcher outside Linux: each long request gets a
// goroutine that reads its connection (serverConn.watchClient).
type hangups struct{}

func newHangups() *hangups                      { return nil }
func (*hangups) close()                         {}
func (*hangups) add(*serverConn) (uint64, bool) { return 0, false }
func (*hangups) remove(uint64)                  {}
