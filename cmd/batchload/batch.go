package main

import (
	"encoding/json"
	"strconv"
)

// batchKind is the shape of a scenario's batch.
type batchKind int

const (
	batchIndependent batchKind = iota // N steps, none referencing another
	batchChain                        // step i's path holds step i-1's new_id
	batchEcho                         // N independent Demo/Echo steps (demo mode)
)

// batchSpec describes one scenario's batch; body builds its canonical request (README "Requests").
type batchSpec struct {
	kind   batchKind
	steps  int
	prefix string // fastPrefix or slowPrefix: the upstream delay (unused for batchEcho)
}

type stepRequest struct {
	Key     string `json:"key"`
	Path    string `json:"path"`
	Payload any    `json:"payload"`
}

type batchRequest struct {
	StopOnError bool          `json:"stop_on_error"`
	Requests    []stepRequest `json:"requests"`
}

func stepKey(i int) string { return string(appendStepKey(nil, i)) }

// appendStepKey appends stepKey(i) to b: the answer checks compare keys without allocating.
func appendStepKey(b []byte, i int) []byte { return strconv.AppendInt(append(b, 's'), int64(i), 10) }

// addPath is the path of an independent step, and of a chain's first step.
func addPath(prefix string) string { return prefix + "/Item/Add" }

// getPath is the path of a chained step that uses id (a literal id, or a placeholder) as its last segment.
func getPath(prefix, id string) string { return prefix + "/Item/Get/" + id }

// echoPath is the demo API method the demo scenario calls.
const echoPath = "Demo/Echo"

// stepPayload is step i's payload: small, and different per step so that nothing can be shared by accident.
func (s batchSpec) stepPayload(i int) any {
	if s.kind == batchEcho {
		return map[string]int{"n": i}
	}
	return map[string]string{"name": "item " + strconv.Itoa(i)}
}

// body returns the batch request. Every batch of a scenario is the same bytes, so phases build it once.
func (s batchSpec) body() []byte {
	req := batchRequest{Requests: make([]stepRequest, s.steps)}
	for i := range req.Requests {
		st := stepRequest{Key: stepKey(i), Payload: s.stepPayload(i)}
		switch {
		case s.kind == batchEcho:
			st.Path = echoPath
		case s.kind == batchChain && i > 0:
			st.Path = getPath(s.prefix, "${"+stepKey(i-1)+".result.new_id}")
		default:
			st.Path = addPath(s.prefix)
		}
		req.Requests[i] = st
	}
	b, err := json.Marshal(req)
	if err != nil {
		panic(err) // static shapes: cannot fail
	}
	return b
}

// directBody is the body of step i sent on its own (the baselines).
func (s batchSpec) directBody(i int) []byte {
	b, err := json.Marshal(s.stepPayload(i))
	if err != nil {
		panic(err)
	}
	return b
}
