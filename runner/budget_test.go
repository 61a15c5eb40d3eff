package runner_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/budget"
	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/runner"
)

// TestCallOverACapIsNotSent: a call over a cap once resolved fails unsent with 413 naming the part and the flag,
// its dependents get 424, and other steps run.
func TestCallOverACapIsNotSent(t *testing.T) {
	big := `{"ok":true,"result":{"s":"` + strings.Repeat("x", 100) + `"}}`
	inv := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"A": func(context.Context, runner.Call) (runner.Response, error) {
			return runner.Response{Status: 200, Body: []byte(big)}, nil
		},
	}}
	res := run(t, inv, runner.Config{MaxCallPath: 64, MaxCallHeader: 64, MaxCallBody: 64}, `{"requests":[
		{"key":"A","path":"a"},
		{"key":"P","path":"p/${A.result.s}"},
		{"key":"H","path":"h","headers":{"X-S":"${A.result.s}"}},
		{"key":"B","path":"b","payload":["${A.result.s}"]},
		{"key":"D","path":"d","payload":"${B}"},
		{"key":"OK","path":"ok","payload":{"short":"${A.result.s}"},"depends_on":["A"]}]}`, runner.Options{})
	for i, part := range map[int]string{1: "path", 2: `header \"X-S\"`, 3: "body"} {
		r := res[i]
		assert.Equal(t, 413, r.Status, r.Key)
		assert.Equal(t, errcode.CallTooLarge, r.Code, r.Key)
		assert.Equal(t, runner.OutcomeTooLarge, r.Outcome, r.Key)
		assert.False(t, r.Executed, r.Key)
		assert.Contains(t, string(r.Body), "not sent: the call's "+part+" is", r.Key)
		assert.Empty(t, inv.Calls(r.Key), "never sent")
	}
	assert.Contains(t, string(res[1].Body), "(-max-call-path)")
	assert.Equal(t, 424, res[4].Status, "a dependent of a step over a cap")
	assert.Equal(t, 413, res[5].Status, "the body of OK is over 64 bytes too")
}

// TestBudgetOfTheBatch: a call's body is reserved before it is built and released once the call returned, an
// Invoker's refusal to reserve a response is 507 naming the budget.
func TestBudgetOfTheBatch(t *testing.T) {
	pool := budget.NewPool(0)
	acct, err := pool.Open(600, 0)
	require.NoError(t, err)
	inv := &fakeInvoker{Step: map[string]func(context.Context, runner.Call) (runner.Response, error){
		"big": func(_ context.Context, c runner.Call) (runner.Response, error) {
			if err := c.Budget.Reserve(1000); err != nil { // what an invoker does before reading a body
				return runner.Response{}, err
			}
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		},
		"body": func(_ context.Context, c runner.Call) (runner.Response, error) {
			assert.Equal(t, int64(len(c.Body)), acct.Used(), "the body is reserved while the call runs")
			return runner.Response{Status: 200, Body: []byte(okBody)}, nil
		},
	}}
	res := run(t, inv, runner.Config{}, `{"requests":[
		{"key":"big","path":"x"},
		{"key":"after","path":"y","payload":"${big.result}"},
		{"key":"body","path":"z","payload":{"s":"`+strings.Repeat("y", 300)+`"}}]}`, runner.Options{Budget: acct})
	assert.Equal(t, 507, res[0].Status)
	assert.Equal(t, errcode.OverBudget, res[0].Code)
	assert.Equal(t, runner.OutcomeOverBudget, res[0].Outcome)
	assert.Contains(t, string(res[0].Body), "-max-batch-bytes")
	assert.Equal(t, 424, res[1].Status)
	assert.Equal(t, 200, res[2].Status)
	assert.Zero(t, acct.Used(), "the call's body was released once the call returned")
	acct.Close()
	assert.Zero(t, pool.InUse())
}

// TestIndexOverBudget: the index a placeholder needs is charged to the batch: when the budget cannot hold it, the
// step that needed it fails with 507.
func TestIndexOverBudget(t *testing.T) {
	acct, err := budget.NewPool(0).Open(32, 0)
	require.NoError(t, err)
	defer acct.Close()
	res := run(t, &fakeInvoker{}, runner.Config{}, `{"requests":[
		{"key":"src","path":"x"},{"key":"dep","path":"y/${src.result.new_id}"}]}`, runner.Options{Budget: acct})
	assert.Equal(t, 200, res[0].Status)
	assert.Equal(t, 507, res[1].Status, "%s", res[1].Body)
	assert.Equal(t, runner.OutcomeOverBudget, res[1].Outcome)
}
