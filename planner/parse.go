package planner

import (
	"strconv"

	"github.com/heimdalr/dag"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxSteps   = 50
	DefaultMaxDepth   = 64
	DefaultMaxPayload = 1 << 20
)

// Parse decodes and validates a batch request body. A refused batch returns an *Error listing every problem.
//
// Parse keeps no reference to body: the Plan holds its own copy. A "payload" (or "body") of null is the same as
// none: the step is sent without a body. It goes through four stages, one file each: decode (the JSON into drafts),
// validate (each step's members), bind (keys and references), build (the dependency graph and the Plan).
func Parse(body []byte, cfg Config) (*Plan, error) {
	if cfg.MaxSteps <= 0 {
		cfg.MaxSteps = DefaultMaxSteps
	}
	if cfg.MaxDepth <= 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	var probs problems
	b, err := decodeBody(body, cfg.MaxDepth, &probs)
	if err != nil {
		return nil, &Error{Problems: []Problem{{Reason: ReasonInvalidJSON, Detail: jsonDetail(err)}}}
	}
	n := len(b.steps)
	switch {
	case b.stepsField == "":
		probs.add(-1, phaseStep, ReasonNoSteps, `no steps: the batch has no "requests"`)
	case n == 0 && !b.stepsBad:
		probs.add(-1, phaseStep, ReasonNoSteps, "no steps: the batch is empty")
	}
	if n > cfg.MaxSteps {
		probs.add(-1, phaseStep, ReasonTooManySteps, strconv.Itoa(n)+" steps; at most "+strconv.Itoa(cfg.MaxSteps)+
			" allowed (-max-steps): split the batch, raise -max-steps, or send the steps as a job (POST /v1/jobs)")
	}

	calls, rollbacks := validate(&b, cfg, &probs)
	bd := bindKeys(&b, &probs)
	deps, reads := make([][]int, n), make([][]int, n)
	for i := range calls {
		deps[i], reads[i] = bd.deps(i, &calls[i])
		if rollbacks[i] != nil {
			bd.rollback(i, &calls[i], rollbacks[i], deps[i])
		}
	}
	if b.atomic && cfg.RequireRollback {
		requireRollbacks(calls, rollbacks, &probs)
	}
	// A batch over the step limit is refused anyway: building a huge graph would only give a hostile body more
	// work to cause.
	var g *dag.DAG
	if n <= cfg.MaxSteps {
		id := func(i int) string {
			if l := bd.label(i); l != "" {
				return l
			}
			return "#" + strconv.Itoa(i)
		}
		g = graph(deps, id, &probs)
	}
	if len(probs.list) > 0 {
		return nil, probs.refusal(bd.label)
	}
	return assemble(&b, calls, rollbacks, deps, reads, bd.read, g), nil
}
