package main

// The reference answer checks: encoding/json decoding into structs, the plain way to read an answer. The fuzz
// targets hold check.go's checks to them (check_fuzz_test.go).

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// refStepBody is the REGOS envelope of every answer the scenarios expect, decoded in one pass: the upstream's
// {"ok": true, "result": {"new_id": N}} and Demo/Echo's {"ok": true, "result": {"n": i}}. The client shares the
// machine's cores with batchd and the upstream, so its checks are kept cheap.
type refStepBody struct {
	OK     *bool `json:"ok"`
	Result struct {
		NewID int64 `json:"new_id"`
		N     *int  `json:"n"`
	} `json:"result"`
}

func (s *refStepBody) newID() (int64, error) {
	if s.OK == nil || !*s.OK {
		return 0, errors.New("ok is not true")
	}
	if s.Result.NewID < 1 {
		return 0, errors.New("no positive result.new_id")
	}
	return s.Result.NewID, nil
}

func (s *refStepBody) echo(want int) error {
	if s.OK == nil || !*s.OK {
		return errors.New("ok is not true")
	}
	if s.Result.N == nil || *s.Result.N != want {
		return fmt.Errorf(`echo result is not {"n": %d}`, want)
	}
	return nil
}

// refCheckNewID verifies one upstream answer {"ok": true, "result": {"new_id": N}} and returns N.
func refCheckNewID(body []byte) (int64, error) {
	var s refStepBody
	if err := json.Unmarshal(body, &s); err != nil {
		return 0, fmt.Errorf("unexpected answer: %w: %s", err, clip(body))
	}
	id, err := s.newID()
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, clip(body))
	}
	return id, nil
}

// refCheckEcho verifies a Demo/Echo answer {"ok": true, "result": {"n": want}}.
func refCheckEcho(body []byte, want int) error {
	var s refStepBody
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("unexpected answer: %w: %s", err, clip(body))
	}
	if err := s.echo(want); err != nil {
		return fmt.Errorf("%w: %s", err, clip(body))
	}
	return nil
}

// refBatchAnswer is batchd's answer to a batch in the canonical form (README "Responses"), decoded in one pass.
type refBatchAnswer struct {
	Responses []struct {
		Key      string      `json:"key"`
		Status   int         `json:"status"`
		Response refStepBody `json:"response"`
	} `json:"responses"`
}

// refRawBatchAnswer keeps each step's body as it came, to quote it in an error message.
type refRawBatchAnswer struct {
	Responses []struct {
		Response json.RawMessage `json:"response"`
	} `json:"responses"`
}

// refCheckBatch verifies batchd's answer to a batch built by a batchSpec: HTTP 200, one result per step in request
// order, each with status 200 and a body the spec accepts.
func refCheckBatch(spec batchSpec, status int, body []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("batch answered HTTP %d: %s", status, clip(body))
	}
	var a refBatchAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("unexpected batch answer: %w: %s", err, clip(body))
	}
	if len(a.Responses) != spec.steps {
		return fmt.Errorf("batch answer has %d results, want %d", len(a.Responses), spec.steps)
	}
	// quote returns step i's body as batchd sent it (parsed again, only on failure).
	quote := func(i int) string {
		var raw refRawBatchAnswer
		if json.Unmarshal(body, &raw) != nil || i >= len(raw.Responses) {
			return clip(body)
		}
		return clip(raw.Responses[i].Response)
	}
	var prev int64
	for i := range a.Responses {
		r := &a.Responses[i]
		if want := stepKey(i); r.Key != want {
			return fmt.Errorf("result %d has key %q, want %q (request order)", i, r.Key, want)
		}
		if r.Status != http.StatusOK {
			return fmt.Errorf("step %s: status %d: %s", r.Key, r.Status, quote(i))
		}
		if spec.kind == batchEcho {
			if err := r.Response.echo(i); err != nil {
				return fmt.Errorf("step %s: %w: %s", r.Key, err, quote(i))
			}
			continue
		}
		id, err := r.Response.newID()
		if err != nil {
			return fmt.Errorf("step %s: %w: %s", r.Key, err, quote(i))
		}
		// A chained step starts after the step before it answered, so the upstream issued it a larger id.
		if spec.kind == batchChain && id <= prev {
			return fmt.Errorf("step %s: new_id %d not after the previous step's %d: the chain did not run in order", r.Key, id, prev)
		}
		prev = id
	}
	return nil
}
