package transport

import (
	"errors"
	"io"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/batchd/batchd/internal/jsonscan"
	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
)

// NormalizeBody turns an API's response body into the JSON value a step result carries (README "Responses", "Limits and
// guarantees"):
//
//   - a body that is empty or only whitespace becomes null;
//   - a body whose content type is JSON (application/json, any +json type) or absent, and that is valid JSON in
//     valid UTF-8 (duplicate member names allowed), is returned as is;
//   - anything else (HTML, text, invalid JSON, JSON with invalid UTF-8 or a lone surrogate escape, JSON sent as
//     text/plain) becomes a JSON string holding the body, invalid UTF-8 replaced by U+FFFD.
//
// The result is always valid JSON that a strict decoder accepts. It may share memory with body.
func NormalizeBody(contentType string, body []byte) []byte {
	out, _ := normalize(contentType, body, nil)
	return out
}

// nullBody is the body of an empty response, shared read-only.
var nullBody = []byte("null")

// validJSON is how a response body is checked: strictly but for duplicate member names, which are the upstream's
// business (a placeholder reads the first one).
var validJSON = jsontext.AllowDuplicateNames(true)

// normalize is NormalizeBody, reserving from bud the bytes of the string it may build before building it (the
// caller holds body's reservation).
func normalize(contentType string, body []byte, bud runner.Budget) ([]byte, error) {
	if isBlank(body) {
		return nullBody, nil
	}
	if planner.JSONMediaType(contentType) && jsontext.Value(body).IsValid(validJSON) {
		return body, nil
	}
	size := jsonscan.StringLen(string(body)) + 2
	if err := reserve(bud, int64(size)); err != nil {
		return nil, err
	}
	return jsonscan.AppendString(make([]byte, 0, size), string(body)), nil
}

func isBlank(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			return false
		}
	}
	return true
}

// reserve draws n bytes from bud, when there is a budget.
func reserve(bud runner.Budget, n int64) error {
	if bud == nil {
		return nil
	}
	return bud.Reserve(n)
}

func release(bud runner.Budget, n int64) {
	if bud != nil {
		bud.Release(n)
	}
}

// errOverCap is what a capped buffer reports past its cap.
var errOverCap = errors.New("transport: over the size cap")

// cappedBuffer collects a body of at most max bytes, each allocation reserved from bud before it is made: the
// bytes a response takes are accounted where they are allocated (README "Limits and guarantees"). Past max it keeps
// max+1 bytes and reports errOverCap; a failed reservation is returned as it is, and the buffer keeps what it had.
type cappedBuffer struct {
	buf []byte
	max int64
	bud runner.Budget
}

// newCappedBuffer returns a buffer for a body of size bytes (-1: unknown), reserving its first allocation.
func newCappedBuffer(size, max int64, bud runner.Budget) (*cappedBuffer, error) {
	n := int64(512)
	if size >= 0 {
		n = min(size+1, max+1) // +1: reading EOF needs no growth
	}
	if err := reserve(bud, n); err != nil {
		return nil, err
	}
	return &cappedBuffer{buf: make([]byte, 0, n), max: max, bud: bud}, nil
}

// grow makes room for at least one more byte: twice the capacity, at most max+1, reserved first.
func (b *cappedBuffer) grow() error {
	old := int64(cap(b.buf))
	n := min(2*old, b.max+1)
	if n <= old {
		return errOverCap
	}
	if err := reserve(b.bud, n); err != nil {
		return err
	}
	nb := make([]byte, len(b.buf), n)
	copy(nb, b.buf)
	b.buf = nb
	release(b.bud, old)
	return nil
}

// readFrom reads r to its end, or to max+1 bytes (errOverCap).
func (b *cappedBuffer) readFrom(r io.Reader) error {
	for {
		if len(b.buf) == cap(b.buf) {
			if err := b.grow(); err != nil {
				return err
			}
		}
		n, err := r.Read(b.buf[len(b.buf):cap(b.buf)])
		b.buf = b.buf[:len(b.buf)+n]
		if int64(len(b.buf)) > b.max {
			return errOverCap
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Write appends p, up to max bytes: past them it keeps what fits and reports errOverCap.
func (b *cappedBuffer) Write(p []byte) (int, error) {
	over := int64(len(b.buf)+len(p)) > b.max
	if over {
		p = p[:b.max-int64(len(b.buf))]
	}
	written := 0
	for len(p) > 0 {
		if len(b.buf) == cap(b.buf) {
			if err := b.grow(); err != nil {
				return written, err
			}
		}
		n := copy(b.buf[len(b.buf):cap(b.buf)], p)
		b.buf = b.buf[:len(b.buf)+n]
		written += n
		p = p[n:]
	}
	if over {
		return written, errOverCap
	}
	return written, nil
}

// discard releases the buffer's reservation: its bytes are not kept.
func (b *cappedBuffer) discard() {
	release(b.bud, int64(cap(b.buf)))
	b.buf = nil
}

// body normalises what was read (NormalizeBody). The reservation of the buffer moves to the body when the body is
// the buffer itself; otherwise it is released.
func (b *cappedBuffer) body(contentType string) ([]byte, error) {
	out, err := normalize(contentType, b.buf, b.bud)
	if err != nil || len(out) == 0 || len(b.buf) == 0 || &out[0] != &b.buf[0] {
		b.discard()
	}
	return out, err
}
