package metrics

import (
	"slices"
	"testing"

	"github.com/batchd/batchd/planner"
)

// TestRejectReasonsCoverPlanner keeps the reason label set in step with the planner: a reason missing here would be
// counted as "invalid" and hidden from dashboards.
func TestRejectReasonsCoverPlanner(t *testing.T) {
	for _, r := range planner.Reasons() {
		if !slices.Contains(RejectReasons, string(r)) {
			t.Errorf("planner reason %q is not in RejectReasons", r)
		}
	}
}
