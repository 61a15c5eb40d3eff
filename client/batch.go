package client

import (
	"strings"
)

// Batch is a batch of steps, sent in batchd's canonical form {"requests": […]} with the flags that are set.
type Batch struct {
	// StopOnError: after the first failure no further step starts (running ones finish).
	StopOnError bool `json:"stop_on_error,omitempty"`
	// Atomic: all or nothing; when a step fails, the steps that succeeded are undone by their Rollback.
	Atomic bool `json:"atomic,omitempty"`
	// Timings: each result carries its Timing and the answer its critical path.
	Timings bool   `json:"timings,omitempty"`
	Steps   []Step `json:"requests"`
}

// Step is one call of a batch.
type Step struct {
	Key    string `json:"key"`              // unique in the batch, [A-Za-z0-9_-]{1,64}
	Method string `json:"method,omitempty"` // default POST
	Path   string `json:"path"`             // the API method, e.g. "Producer/Add" or "/users/42"
	// Payload is the request body, written as JSON by encoding/json (a json.RawMessage goes as it stands); nil
	// sends none. Its strings may hold placeholders (see Ref); wrap data that may contain "${" in Literal.
	Payload   any               `json:"payload,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`    // this step's own headers
	DependsOn []string          `json:"depends_on,omitempty"` // keys to wait for even without a placeholder
	Rollback  *Rollback         `json:"rollback,omitempty"`   // what undoes this step in an Atomic batch

	// The REST helpers. OKStatus lists statuses that count as success (e.g. 404 for an idempotent delete). When
	// is a condition ("${A:status} == 404", "exists ${A.result.0}"): when false the step is skipped (204, not a
	// failure). ForEach is a placeholder of an array ("${L.result}"): the step runs once per element, with
	// ${item}, ${item.x} and ${index}, and its Result gains Items. CaptureHeaders names response headers its
	// Result carries in Headers.
	OKStatus       []int    `json:"ok_status,omitempty"`
	When           string   `json:"when,omitempty"`
	ForEach        string   `json:"for_each,omitempty"`
	CaptureHeaders []string `json:"capture_headers,omitempty"`
}

// Rollback is the call that undoes a step in an atomic batch; its placeholders may use ${self.…}, the step's own
// response.
type Rollback struct {
	Method  string            `json:"method,omitempty"`
	Path    string            `json:"path"`
	Payload any               `json:"payload,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

// Add appends steps to the batch and returns it, for chaining.
func (b *Batch) Add(steps ...Step) *Batch {
	b.Steps = append(b.Steps, steps...)
	return b
}

// Ref returns the placeholder of step key's response walked by path: Ref("A", "result", "new_id") is
// "${A.result.new_id}", Ref("L", "result", "0", "id") indexes an array. As a whole string value it becomes the
// referenced value with its JSON type; inside a longer string, its text.
func Ref(key string, path ...string) string {
	if len(path) == 0 {
		return "${" + key + "}"
	}
	return "${" + key + "." + strings.Join(path, ".") + "}"
}

// Literal returns a whole string value that batchd reads as s itself: every "${" in s is written "$${", so data
// that happens to look like a placeholder is never resolved. Use it for every string of a payload, path or header
// that comes from outside the program.
func Literal(s string) string { return strings.ReplaceAll(s, "${", "$${") }
