//go:build linux

package http1

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
)

// hangups watches, in one goroutine and one epoll set, every connection
// whose request has run past WatchDelay, for its client to close or reset
// it. A goroutine per watched request, reading its connection, would hold
// a stack for each of thousands of long streams (issue 9: memory per held
// stream); here a watched request costs a set entry and two epoll_ctl calls.
type hangups struct {
	epfd   int
	wakeFD [2]int // a pipe whose read end is in the set: close wakes the loop

	mu    sync.Mutex
	conns map[uint64]watched // by the token in their epoll entry
	next  uint64
	done  chan struct{}
}

// wakeToken is the epoll token of the pipe's read end.
const wakeToken = 0

// newHangups starts the watcher; nil if epoll is not available.
func newHangups() *hangups {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	h := &hangups{epfd: epfd, conns: make(map[uint64]watched), next: wakeToken + 1, done: make(chan struct{})}
	if err := syscall.Pipe2(h.wakeFD[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	setToken(&ev, wakeToken)
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, h.wakeFD[0], &ev); err != nil {
		h.closeFDs()
		return nil
	}
	go h.loop()
	return h
}

func (h *hangups) closeFDs() {
	syscall.Close(h.wakeFD[0])
	syscall.Close(h.wakeFD[1])
	syscall.Close(h.epfd)
}

// close stops the loop and waits for it; nil does nothing.
func (h *hangups) close() {
	if h == nil {
		return
	}
	syscall.Write(h.wakeFD[1], []byte{0})
	<-h.done
	h.closeFDs()
}

// setToken and token keep a 64-bit token in an epoll event's data.
func setToken(ev *syscall.EpollEvent, t uint64) {
	ev.Fd, ev.Pad = int32(uint32(t)), int32(uint32(t>>32))
}

func token(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// watched is one entry of the set: a connection and its socket.
type watched struct {
	c  *serverConn
	rc syscall.RawConn
}

// add watches c's connection for a hangup, once (EPOLLONESHOT: bytes of
// a next request end the watch too). It returns the entry's token, or
// false when the connection cannot be watched this way.
func (h *hangups) add(c *serverConn) (uint64, bool) {
	rc := rawConnOf(c.nc)
	if rc == nil {
		return 0, false
	}
	h.mu.Lock()
	t := h.next
	h.next++
	h.conns[t] = watched{c, rc}
	h.mu.Unlock()
	if h.ctl(syscall.EPOLL_CTL_ADD, rc, t) != nil {
		h.forget(t)
		return 0, false
	}
	return t, true
}

// remove ends the watch of token t. A closed connection left the set by
// itself.
func (h *hangups) remove(t uint64) {
	if w, ok := h.forget(t); ok {
		h.ctl(syscall.EPOLL_CTL_DEL, w.rc, t)
	}
}

// ctl makes (ADD), re-arms (MOD) or drops (DEL) the entry of rc's socket,
// with token t.
func (h *hangups) ctl(op int, rc syscall.RawConn, t uint64) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	setToken(&ev, t)
	var err error
	if cerr := rc.Control(func(fd uintptr) { err = syscall.EpollCtl(h.epfd, op, int(fd), &ev) }); cerr != nil {
		return cerr
	}
	return err
}

// forget drops token t from the map and returns its entry.
func (h *hangups) forget(t uint64) (watched, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w, ok := h.conns[t]
	delete(h.conns, t)
	return w, ok
}

// loop waits for events and tells each watched connection.
func (h *hangups) loop() {
	defer close(h.done)
	events := make([]syscall.EpollEvent, 64)
	for {
		n, err := syscall.EpollWait(h.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		for i := range events[:n] {
			t := token(&events[i])
			if t == wakeToken {
				return
			}
			h.mu.Lock()
			w, ok := h.conns[t]
			h.mu.Unlock()
			if ok {
				w.c.hungUp(h, t, w.rc)
			}
		}
	}
}

// hungUp is the shared watcher's news of token t on socket rc: the client
// may have gone. One peek tells: the end of the stream or an error cancels
// the request; the bytes of a next request end the watch (the entry fired
// once); nothing at all (a spurious wake-up) re-arms it.
func (c *serverConn) hungUp(h *hangups, t uint64, rc syscall.RawConn) {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if c.watch != watchRunning || c.hang != h || c.hangToken != t {
		return // the request has ended
	}
	switch n, err := peekSocket(rc); {
	case err == syscall.EAGAIN:
		h.ctl(syscall.EPOLL_CTL_MOD, rc, t)
	case err != nil:
		c.cancel(fmt.Errorf("%w: %w", ErrClientGone, err))
	case n == 0:
		c.cancel(fmt.Errorf("%w: %w", ErrClientGone, io.EOF))
	}
}

// rawConnOf returns the socket under c, through wrappers that expose the
// connection they wrap (NetConn, as crypto/tls has it); nil if there is
// none.
func rawConnOf(c any) syscall.RawConn {
	for range 8 {
		switch v := c.(type) {
		case syscall.Conn:
			rc, err := v.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
