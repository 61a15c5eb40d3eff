package planner

// This file holds the API the planner promises; the bodies are being written. Delete it when the real code lands.

// Parse decodes and validates a batch request body. A refused batch returns an *Error listing every problem.
func Parse(body []byte, cfg Config) (*Plan, error) { panic("planner: not implemented") }

// JSONTemplate is a compiled payload.
type JSONTemplate struct{}

// Static reports whether the payload holds no placeholder; Append then ignores r.
func (t *JSONTemplate) Static() bool { panic("planner: not implemented") }

// Append appends the resolved payload JSON to dst. A placeholder that cannot be resolved yields a *ResolveError.
func (t *JSONTemplate) Append(dst []byte, r Responses) ([]byte, error) { panic("planner: not implemented") }

// StringTemplate is a compiled header value.
type StringTemplate struct{}

// Resolve returns the header value with its placeholders interpolated as text.
func (t *StringTemplate) Resolve(r Responses) (string, error) { panic("planner: not implemented") }

// PathTemplate is a compiled method path.
type PathTemplate struct{}

// Resolve returns the method path (no leading "/", query kept), each substituted value escaped as one path
// segment, and checks the result again (a refused path is a *ResolveError with errcode.ResolvedPathRefused).
func (t *PathTemplate) Resolve(r Responses) (string, error) { panic("planner: not implemented") }

// CheckPath reports whether p is a safe method path (CONTRACT.md §3), nil when it is.
func CheckPath(p string) error { panic("planner: not implemented") }
