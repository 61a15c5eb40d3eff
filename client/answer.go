package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
)

// Answer is what a batch that ran answered.
type Answer struct {
	Results []Result // every step once, in request order
	// Failed is how many steps failed, as batchd counted them (a status of 400 or more, "ok": false, a timeout,
	// a step not executed).
	Failed     int
	DurationMS float64 // the batch's wall time in batchd, in milliseconds
	// CriticalPathMS is the longest chain of step durations through the dependencies; set when the batch asked
	// for Timings.
	CriticalPathMS *float64
	Atomic         *AtomicOutcome // set for an atomic batch
	// Plan is set, and Results empty, when the batch asked for a dry run itself ("dry_run": true).
	Plan  *Plan
	byKey map[string]int
}

// Result is one step's result.
type Result struct {
	Index  int    // position in the request
	Key    string // the step's key ("0", "1", … for a bare array of steps without keys)
	Status int    // the step's HTTP status, or the one batchd decided (424 not executed, 504 timed out, …)
	// Response is the step's body as JSON: the API's JSON as it was (compacted), any other body as a JSON string,
	// null for none; where batchd decided the outcome, an ErrorResult (see Result.ErrorResult).
	Response json.RawMessage
	// Items are a fan-out step's calls (ForEach), in element order; nil for any other step.
	Items []Item
	// Headers are the response headers the step named in CaptureHeaders, by the name it gave; nil when it named
	// none.
	Headers map[string]string
	Timing  *Timing // set when the batch asked for Timings
	// RolledBack: in an atomic batch that did not commit, this step was undone.
	RolledBack bool
	// RollbackStatus is the status of this step's rollback, when one was attempted.
	RollbackStatus *int
}

// Item is one call of a fan-out step.
type Item struct {
	Status   int             `json:"status"`
	Response json.RawMessage `json:"response"`
}

// Timing is when a step ran, in milliseconds from the batch's start.
type Timing struct {
	QueuedMS   float64  `json:"queued_ms"`             // every dependency had ended
	StartedMS  *float64 `json:"started_ms,omitempty"`  // nil: never executed
	DurationMS *float64 `json:"duration_ms,omitempty"` // nil: never executed
}

// AtomicOutcome is how an atomic batch ended.
type AtomicOutcome struct {
	Committed bool `json:"committed"` // every step succeeded; no rollback ran
	// RollbackFailures are the rollbacks that failed, with their status and response: steps left done.
	RollbackFailures []RollbackFailure `json:"rollback_failures"`
}

// RollbackFailure is a rollback that did not succeed.
type RollbackFailure struct {
	Key      string          `json:"key"`
	Status   int             `json:"status"`
	Response json.RawMessage `json:"response"`
}

// ErrorResult is the REGOS error shape, {"ok": false, "result": {"error": code, "description": …}}: a step's
// business error, or batchd's word on a step it decided (4240 a dependency failed, 5040 timed out, …).
type ErrorResult struct {
	Code        int    `json:"error"`
	Description string `json:"description"`
}

// Result returns the result of the step with key.
func (a *Answer) Result(key string) (Result, bool) {
	i, ok := a.byKey[key]
	if !ok {
		return Result{}, false
	}
	return a.Results[i], true
}

// OK reports whether every step succeeded (false for a dry run's answer, which ran nothing).
func (a *Answer) OK() bool { return a.Failed == 0 && a.Plan == nil }

// Decode unmarshals the step's response into v.
func (r Result) Decode(v any) error { return json.Unmarshal(r.Response, v) }

// ErrorResult returns the response read as an ErrorResult when it is one: a JSON object whose "ok" is false and
// whose result carries a numeric "error".
func (r Result) ErrorResult() (ErrorResult, bool) {
	var body struct {
		OK     *bool        `json:"ok"`
		Result *ErrorResult `json:"result"`
	}
	if json.Unmarshal(r.Response, &body) != nil || body.OK == nil || *body.OK || body.Result == nil || body.Result.Code == 0 {
		return ErrorResult{}, false
	}
	return *body.Result, true
}

// MarshalJSON writes the answer in batchd's JSON form: {"responses": [{"key", "status", "response", …}, …]},
// with "critical_path_ms" and "atomic" when the batch asked for them (or {"plan": …} for a dry run).
func (a *Answer) MarshalJSON() ([]byte, error) {
	if a.Plan != nil {
		return marshal(struct {
			Plan *Plan `json:"plan"`
		}{a.Plan})
	}
	type result struct {
		Key            string             `json:"key"`
		Status         int                `json:"status"`
		Response       json.RawMessage    `json:"response"`
		Items          *[]Item            `json:"items,omitempty"`   // written when set, even empty
		Headers        *map[string]string `json:"headers,omitempty"` // likewise
		Timing         *Timing            `json:"timing,omitempty"`
		RolledBack     *bool              `json:"rolled_back,omitempty"`
		RollbackStatus *int               `json:"rollback_status,omitempty"`
	}
	out := struct {
		Responses      []result       `json:"responses"`
		CriticalPathMS *float64       `json:"critical_path_ms,omitempty"`
		Atomic         *AtomicOutcome `json:"atomic,omitempty"`
	}{Responses: make([]result, len(a.Results)), CriticalPathMS: a.CriticalPathMS, Atomic: a.Atomic}
	for i, r := range a.Results {
		out.Responses[i] = result{Key: r.Key, Status: r.Status, Response: r.Response, Timing: r.Timing,
			RollbackStatus: r.RollbackStatus}
		if r.Items != nil {
			out.Responses[i].Items = &r.Items
		}
		if r.Headers != nil {
			out.Responses[i].Headers = &r.Headers
		}
		if a.Atomic != nil {
			out.Responses[i].RolledBack = &r.RolledBack
		}
	}
	return marshal(out)
}

// Run runs a batch and returns its answer once every step has ended. A batch refused before anything ran is an
// *Error (Details lists every problem); an answer cut short is ErrIncomplete with the results that arrived.
func (c *Client) Run(ctx context.Context, b *Batch, opts ...RequestOption) (*Answer, error) {
	body, err := marshal(b)
	if err != nil {
		return nil, err
	}
	return c.RunJSON(ctx, body, opts...)
}

// RunJSON runs a batch written as JSON in any form batchd accepts (the body is sent as it stands), as Run does.
func (c *Client) RunJSON(ctx context.Context, body []byte, opts ...RequestOption) (*Answer, error) {
	return c.RunStream(ctx, body, nil, opts...)
}

// RunStream runs a batch written as JSON, as RunJSON does, and calls onResult (when not nil) with each step's
// result as soon as that step ends, in the order steps end, from the calling goroutine.
func (c *Client) RunStream(ctx context.Context, body []byte, onResult func(Result), opts ...RequestOption) (*Answer, error) {
	opts = append(slices.Clip(opts), Header("Accept", "application/x-ndjson"))
	resp, err := c.do(ctx, http.MethodPost, "/v1/batch", nil, bytes.NewReader(body), "application/json", opts)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch mediaType(resp.Header.Get("Content-Type")) {
	case "application/x-ndjson":
		return c.readStream(resp.Body, onResult)
	case "application/json":
		// A batch that asks for a dry run itself is answered with its plan whatever the Accept.
		raw, err := c.readAll(resp.Body)
		if err != nil {
			return nil, err
		}
		var p planAnswer
		if err := json.Unmarshal(raw, &p); err == nil && p.Plan != nil {
			return &Answer{Plan: p.Plan}, nil
		}
		return nil, errors.New("client: batchd answered a batch with JSON instead of the stream asked for; " +
			"a proxy between may drop the Accept header (application/x-ndjson)")
	default:
		return nil, fmt.Errorf("client: batchd answered a batch with Content-Type %q, not application/x-ndjson",
			resp.Header.Get("Content-Type"))
	}
}

// streamLine is any line of a streamed answer: a step's ({"index","key","status","response","timing"?}), a
// rollback's ({"index","key","rolled_back","rollback_status"}) or the summary ({"steps","failed","duration_ms",
// "critical_path_ms"?,"atomic"?}, the only one without "index").
type streamLine struct {
	Index          *int              `json:"index"`
	Key            string            `json:"key"`
	Status         *int              `json:"status"`
	Response       json.RawMessage   `json:"response"`
	Items          []Item            `json:"items"`
	Headers        map[string]string `json:"headers"`
	Timing         *Timing           `json:"timing"`
	RolledBack     *bool             `json:"rolled_back"`
	RollbackStatus *int              `json:"rollback_status"`
	Steps          *int              `json:"steps"`
	Failed         *int              `json:"failed"`
	DurationMS     float64           `json:"duration_ms"`
	CriticalPathMS *float64          `json:"critical_path_ms"`
	Atomic         *AtomicOutcome    `json:"atomic"`
}

// readStream reads a streamed answer into an Answer in request order. The whole stream is bounded by MaxAnswer.
func (c *Client) readStream(body io.Reader, onResult func(Result)) (*Answer, error) {
	lr := newLineReader(io.LimitReader(body, c.maxAnswer+1), c.maxAnswer)
	ans := &Answer{}
	var rollbacks []streamLine
	for {
		line, err := lr.next()
		if lr.total > c.maxAnswer {
			ans.finish()
			return ans, fmt.Errorf("client: the answer is over %d bytes (Config.MaxAnswer)", c.maxAnswer)
		}
		if errors.Is(err, io.EOF) {
			ans.finish()
			return ans, ErrIncomplete
		}
		if err != nil {
			ans.finish()
			return ans, fmt.Errorf("client: reading the answer: %w", err)
		}
		var l streamLine
		if err := json.Unmarshal(line, &l); err != nil {
			return ans, fmt.Errorf("client: a line of the answer is not JSON (%v): %.200q", err, line)
		}
		switch {
		case l.Index == nil:
			if l.Steps == nil || l.Failed == nil {
				return ans, fmt.Errorf("client: a line of the answer is neither a step's nor the summary: %.200q", line)
			}
			ans.Failed, ans.DurationMS, ans.CriticalPathMS, ans.Atomic = *l.Failed, l.DurationMS, l.CriticalPathMS, l.Atomic
			return ans, ans.complete(*l.Steps, rollbacks)
		case l.Status != nil:
			r := Result{Index: *l.Index, Key: l.Key, Status: *l.Status, Response: l.Response, Items: l.Items,
				Headers: l.Headers, Timing: l.Timing}
			if r.Response == nil {
				r.Response = json.RawMessage("null")
			}
			for i := range r.Items {
				if r.Items[i].Response == nil {
					r.Items[i].Response = json.RawMessage("null")
				}
			}
			ans.Results = append(ans.Results, r)
			if onResult != nil {
				onResult(r)
			}
		case l.RolledBack != nil:
			rollbacks = append(rollbacks, l)
		default:
			return ans, fmt.Errorf("client: a line of the answer is neither a step's nor the summary: %.200q", line)
		}
	}
}

// finish puts the results that arrived in request order.
func (a *Answer) finish() {
	slices.SortFunc(a.Results, func(x, y Result) int { return x.Index - y.Index })
	a.byKey = make(map[string]int, len(a.Results))
	for i, r := range a.Results {
		a.byKey[r.Key] = i
	}
}

// complete checks that the results are steps 0…steps-1 once each and applies the rollback lines.
func (a *Answer) complete(steps int, rollbacks []streamLine) error {
	a.finish()
	if len(a.Results) != steps {
		return fmt.Errorf("client: the answer's summary counts %d steps, but %d results arrived", steps, len(a.Results))
	}
	for i, r := range a.Results {
		if r.Index != i {
			return fmt.Errorf("client: the answer has no result for step %d, or two for step %d", i, r.Index)
		}
	}
	for _, rb := range rollbacks {
		if *rb.Index < 0 || *rb.Index >= steps {
			return fmt.Errorf("client: a rollback line names step %d of %d", *rb.Index, steps)
		}
		r := &a.Results[*rb.Index]
		r.RolledBack, r.RollbackStatus = *rb.RolledBack, rb.RollbackStatus
	}
	return nil
}

// Plan is a batch's dry run: how batchd would run it, with nothing sent.
type Plan struct {
	Steps []PlanStep `json:"steps"` // in request order
	// Levels is the number of levels: the steps on the longest dependency chain.
	Levels int `json:"levels"`
	// CriticalPath is a longest dependency chain, first step to last.
	CriticalPath []string `json:"critical_path"`
}

// PlanStep is one step of a Plan.
type PlanStep struct {
	Key       string   `json:"key"`
	Method    string   `json:"method"`
	Path      string   `json:"path"`       // as written, placeholders included
	DependsOn []string `json:"depends_on"` // every step it waits for: placeholders and depends_on
	Level     int      `json:"level"`      // 0: no dependency; else one more than its deepest dependency's
}

type planAnswer struct {
	Plan *Plan `json:"plan"`
}

// ByLevel returns the steps grouped by level, level 0 first, each level in request order.
func (p *Plan) ByLevel() [][]PlanStep {
	depth := 0
	for _, s := range p.Steps {
		if s.Level >= 0 && s.Level < len(p.Steps) { // a level is below the step count; anything else is dropped
			depth = max(depth, s.Level+1)
		}
	}
	out := make([][]PlanStep, depth)
	for _, s := range p.Steps {
		if s.Level >= 0 && s.Level < depth {
			out[s.Level] = append(out[s.Level], s)
		}
	}
	return out
}

// Plan validates and plans a batch without running it (a dry run: nothing is sent to any API).
func (c *Client) Plan(ctx context.Context, b *Batch, opts ...RequestOption) (*Plan, error) {
	body, err := marshal(b)
	if err != nil {
		return nil, err
	}
	return c.PlanJSON(ctx, body, opts...)
}

// PlanJSON plans a batch written as JSON in any form batchd accepts, as Plan does.
func (c *Client) PlanJSON(ctx context.Context, body []byte, opts ...RequestOption) (*Plan, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/batch", url.Values{"dry_run": {"true"}}, bytes.NewReader(body),
		"application/json", opts)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := c.readAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var p planAnswer
	if err := json.Unmarshal(raw, &p); err != nil || p.Plan == nil {
		return nil, fmt.Errorf("client: the dry run's answer is not a plan: %.200q", raw)
	}
	return p.Plan, nil
}
