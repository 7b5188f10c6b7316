package tunnel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/airlock-proxy/airlock/proto"
)

func TestFailureReason(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("dial: %w", ErrPinMismatch), "pin_mismatch"},
		{&peerError{msg: "refused", sentinel: ErrUnknownPeer}, "unauthorized"},
		{fmt.Errorf("proxy: %w", ErrProxyAuth), "proxy_auth"},
		{fmt.Errorf("x: %w", proto.ErrProtocol), "protocol"},
		{fmt.Errorf("x: %w", errVersion), "protocol"},
		{fmt.Errorf("x: %w", errHandshakeTimeout), "timeout"},
		{context.DeadlineExceeded, "timeout"},
		{os.ErrDeadlineExceeded, "timeout"},
		{syscall.ECONNREFUSED, "network"},
		{errors.New("anything else"), "network"},
	} {
		if got := FailureReasons[failureReason(tt.err)]; got != tt.want {
			t.Errorf("failureReason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
	var f failureCounters
	if len(f) != len(FailureReasons) {
		t.Errorf("%d failure counters for %d reasons", len(f), len(FailureReasons))
	}
}
