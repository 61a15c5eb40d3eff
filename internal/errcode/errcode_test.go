package errcode

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestStatus(t *testing.T) {
	for c, want := range map[Code]int{StepTimeout: 504, DependencyFailed: 424, InvalidBatch: 400, StepPanic: 500, DemoValidation: 200, NotExecuted: 412} {
		assert.Equal(t, want, c.Status(), "%d", c)
	}
}

func TestBodies(t *testing.T) {
	assert.JSONEq(t, `{"ok":false,"result":{"error":5040,"description":"step \"x\"\ttimed out \u0001"}}`,
		string(Body(StepTimeout, "step \"x\"\ttimed out \x01")))
	assert.JSONEq(t, `{"ok":false,"result":{"error":4000,"description":"d","details":[{"key":"a","reason":"cycle","problem":"p"},{"key":"","reason":"r","problem":"q"}]}}`,
		string(BatchBody(InvalidBatch, "cycle", "d", []Detail{{"a", "cycle", "p"}, {"", "r", "q"}})))
	assert.JSONEq(t, `{"ok":false,"result":{"error":4290,"description":"slow down","details":[{"key":"","reason":"rate_limited","problem":"slow down"}]}}`,
		string(BatchBody(RateLimited, "rate_limited", "slow down", nil)))
}
