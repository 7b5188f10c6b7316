package relay

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// copier, watcher and connection must be owned and stopped.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
