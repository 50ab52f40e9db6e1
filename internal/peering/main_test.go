package peering

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (a round of questions to peers starts some).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
