package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// The answer checks run once per answer on the tool's hot path, on cores it shares with batchd and the upstream,
// so they read each answer in one streaming pass with a reused jsontext.Decoder and allocate nothing when the
// answer is right.
//
// What they accept is what a decoding with encoding/json into the answer's types accepts (check_ref_test.go keeps
// that decoding, and FuzzCheckBatch and FuzzCheckAnswer hold the two together), with three refusals more, all of
// JSON that batchd and the upstream never send:
//
//   - invalid UTF-8 and duplicate member names, anywhere in the answer (jsontext's defaults; encoding/json
//     repairs the one and lets the last duplicate win);
//   - a member whose name equals a name the check reads only when case is ignored ("OK" beside or instead of
//     "ok"): encoding/json takes it for that member.
//
// Otherwise, like encoding/json: the answer is one JSON value with nothing but whitespace after it; the members the
// checks read may come in any order, other members are skipped whatever they hold; null reads as an absent
// member; a member of the wrong type is an error; integers must be integer literals in range.

// checker reads answers. It is not safe for concurrent use; checkers holds the idle ones.
type checker struct {
	body    []byte       // the answer
	src     bytes.Buffer // body again: from a bytes.Buffer the decoder reads in place, without a copy
	dec     jsontext.Decoder
	name    []byte // the member name just read, unescaped: in body or in nameBuf
	nameBuf []byte
	key     []byte   // a result's key unescaped, when it has escapes
	want    []byte   // the key expected
	results []result // the batch answer's results, in the order they came
}

// envelope is the REGOS envelope of an answer: the upstream's {"ok": true, "result": {"new_id": N}} and
// Demo/Echo's {"ok": true, "result": {"n": i}}. Both members of result are read (and type-checked) in both.
type envelope struct {
	ok    bool  // ok is true
	newID int64 // result.new_id, 0 when absent
	n     int   // result.n, when hasN
	hasN  bool
}

// result is one element of a batch answer's responses.
type result struct {
	key      []byte // as sent, a JSON string; nil when absent or null
	status   int64  // 0 when absent
	body     envelope
	response []byte // as sent, to quote in an error
}

// checkers holds idle checkers (their decoder state and buffers) for the goroutines that check answers: a batch
// op runs in up to -concurrency goroutines at once, a par op in one per step. It holds no configuration.
var checkers = sync.Pool{New: func() any { return new(checker) }}

func getChecker(body []byte) *checker {
	c := checkers.Get().(*checker)
	c.body, c.src = body, *bytes.NewBuffer(body)
	c.dec.Reset(&c.src)
	return c
}

func putChecker(c *checker) {
	clear(c.results) // an idle checker keeps no answer alive,
	c.body, c.src, c.name = nil, bytes.Buffer{}, nil
	c.dec.Reset(&c.src)
	if cap(c.results) > 1<<10 { // nor the results of a huge one
		c.results = nil
	}
	checkers.Put(c)
}

// checkNewID verifies one upstream answer {"ok": true, "result": {"new_id": N}} and returns N.
func checkNewID(body []byte) (int64, error) {
	c := getChecker(body)
	defer putChecker(c)
	var e envelope
	if err := c.answer(&e); err != nil {
		return 0, fmt.Errorf("unexpected answer: %w: %s", err, clip(body))
	}
	id, err := e.newIDOK()
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, clip(body))
	}
	return id, nil
}

// checkEcho verifies a Demo/Echo answer {"ok": true, "result": {"n": want}}.
func checkEcho(body []byte, want int) error {
	c := getChecker(body)
	defer putChecker(c)
	var e envelope
	if err := c.answer(&e); err != nil {
		return fmt.Errorf("unexpected answer: %w: %s", err, clip(body))
	}
	if err := e.echoOK(want); err != nil {
		return fmt.Errorf("%w: %s", err, clip(body))
	}
	return nil
}

// checkBatch verifies batchd's answer to a batch built by a batchSpec (README "Responses"): HTTP 200, one result per
// step in request order, each with status 200 and a body the spec accepts. An error about a step quotes that
// step's response as batchd sent it.
func checkBatch(spec batchSpec, status int, body []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("batch answered HTTP %d: %s", status, clip(body))
	}
	c := getChecker(body)
	defer putChecker(c)
	if err := c.batch(); err != nil {
		return fmt.Errorf("unexpected batch answer: %w: %s", err, clip(body))
	}
	if len(c.results) != spec.steps {
		return fmt.Errorf("batch answer has %d results, want %d", len(c.results), spec.steps)
	}
	var prev int64
	for i := range c.results {
		r := &c.results[i]
		key := c.unquoteKey(r.key)
		if c.want = appendStepKey(c.want[:0], i); !bytes.Equal(key, c.want) {
			return fmt.Errorf("result %d has key %q, want %q (request order)", i, key, c.want)
		}
		if r.status != http.StatusOK {
			return fmt.Errorf("step %s: status %d: %s", key, r.status, clip(r.response))
		}
		if spec.kind == batchEcho {
			if err := r.body.echoOK(i); err != nil {
				return fmt.Errorf("step %s: %w: %s", key, err, clip(r.response))
			}
			continue
		}
		id, err := r.body.newIDOK()
		if err != nil {
			return fmt.Errorf("step %s: %w: %s", key, err, clip(r.response))
		}
		// A chained step starts after the step before it answered, so the upstream issued it a larger id.
		if spec.kind == batchChain && id <= prev {
			return fmt.Errorf("step %s: new_id %d not after the previous step's %d: the chain did not run in order", key, id, prev)
		}
		prev = id
	}
	return nil
}

func (e *envelope) newIDOK() (int64, error) {
	if !e.ok {
		return 0, errors.New("ok is not true")
	}
	if e.newID < 1 {
		return 0, errors.New("no positive result.new_id")
	}
	return e.newID, nil
}

func (e *envelope) echoOK(want int) error {
	if !e.ok {
		return errors.New("ok is not true")
	}
	if !e.hasN || e.n != want {
		return fmt.Errorf(`echo result is not {"n": %d}`, want)
	}
	return nil
}

// answer reads a whole answer that is one envelope.
func (c *checker) answer(e *envelope) error {
	if err := c.envelope(e); err != nil {
		return err
	}
	return c.end()
}

// batch reads a whole batch answer {"responses": [result, …]} into c.results.
func (c *checker) batch() error {
	c.results = c.results[:0]
	err := c.object(func() error {
		if string(c.name) != "responses" {
			return c.skip("responses")
		}
		return c.array(func() error {
			c.results = append(c.results, result{})
			return c.result(&c.results[len(c.results)-1])
		})
	})
	if err != nil {
		return err
	}
	return c.end()
}

// result reads one result {"key": …, "status": …, "response": envelope} into r.
func (c *checker) result(r *result) error {
	return c.object(func() (err error) {
		switch string(c.name) {
		case "key":
			r.key, err = c.str()
		case "status":
			r.status, _, err = c.integer(strconv.IntSize)
		case "response":
			start := c.dec.InputOffset() // after the name: the ':' and blanks before the value follow
			err = c.envelope(&r.body)
			r.response = bytes.TrimLeft(c.body[start:c.dec.InputOffset()], ": \t\r\n")
		default:
			err = c.skip("key", "status", "response")
		}
		return err
	})
}

// envelope reads {"ok": …, "result": {"new_id": …, "n": …}} into e.
func (c *checker) envelope(e *envelope) error {
	*e = envelope{}
	return c.object(func() (err error) {
		switch string(c.name) {
		case "ok":
			e.ok, err = c.boolean()
		case "result":
			err = c.object(func() (err error) {
				switch string(c.name) {
				case "new_id":
					e.newID, _, err = c.integer(64)
				case "n":
					var n int64
					n, e.hasN, err = c.integer(strconv.IntSize)
					e.n = int(n)
				default:
					err = c.skip("new_id", "n")
				}
				return err
			})
		default:
			err = c.skip("ok", "result")
		}
		return err
	})
}

// object reads the object that comes next, calling member for each member with its name in c.name; member reads
// the value. A null is read as an empty object.
func (c *checker) object(member func() error) error {
	if ok, err := c.open('{', "an object"); !ok || err != nil {
		return err
	}
	for c.dec.PeekKind() != '}' { // or a syntax error, that ReadValue returns
		if err := c.readName(); err != nil {
			return err
		}
		if err := member(); err != nil {
			return err
		}
	}
	_, err := c.dec.ReadToken()
	return err
}

// array reads the array that comes next, calling elem to read each element. A null is read as an empty array.
func (c *checker) array(elem func() error) error {
	if ok, err := c.open('[', "an array"); !ok || err != nil {
		return err
	}
	for c.dec.PeekKind() != ']' { // or a syntax error, that elem's first read returns
		if err := elem(); err != nil {
			return err
		}
	}
	_, err := c.dec.ReadToken()
	return err
}

// open reads the delim ('{' or '[') that starts the value that comes next and reports true, or reads a null and
// reports false. Any other value is an error.
func (c *checker) open(delim jsontext.Kind, want string) (bool, error) {
	if c.dec.PeekKind() == delim {
		_, err := c.dec.ReadToken()
		return err == nil, err
	}
	v, err := c.dec.ReadValue()
	if err != nil {
		return false, eofIsUnexpected(err)
	}
	if v.Kind() != 'n' {
		return false, c.wrongKind(v, want)
	}
	return false, nil
}

// readName reads the next member name, unescaped, into c.name: valid until the next read.
func (c *checker) readName() error {
	v, err := c.dec.ReadValue()
	if err != nil {
		return err
	}
	if !hasEscape(v) {
		c.name = v[1 : len(v)-1]
		return nil
	}
	c.nameBuf, err = jsontext.AppendUnquote(c.nameBuf[:0], v)
	c.name = c.nameBuf
	return err
}

// skip skips the value of a member (named c.name) that the check does not read. read are the names it reads: a
// name equal to one of them when case is ignored is refused instead, since encoding/json took it for that member.
func (c *checker) skip(read ...string) error {
	for _, name := range read {
		if bytes.EqualFold(c.name, []byte(name)) {
			return fmt.Errorf("%s: member names are case-sensitive, want %q", c.where(), name)
		}
	}
	return c.dec.SkipValue()
}

// boolean reads true, false, or null (false).
func (c *checker) boolean() (bool, error) {
	v, err := c.dec.ReadValue()
	if err != nil {
		return false, err
	}
	switch v.Kind() {
	case 't':
		return true, nil
	case 'f', 'n':
		return false, nil
	}
	return false, c.wrongKind(v, "a boolean")
}

// integer reads an integer literal that fits in bits (present), or null (0, not present).
func (c *checker) integer(bits int) (n int64, present bool, err error) {
	v, err := c.dec.ReadValue()
	if err != nil {
		return 0, false, err
	}
	switch v.Kind() {
	case '0':
		if n, err = strconv.ParseInt(string(v), 10, bits); err != nil {
			return 0, false, c.wrongKind(v, fmt.Sprintf("an integer of %d bits", bits))
		}
		return n, true, nil
	case 'n':
		return 0, false, nil
	}
	return 0, false, c.wrongKind(v, "an integer")
}

// str reads a string, and returns it as sent (a slice of c.body), or null (nil).
func (c *checker) str() ([]byte, error) {
	v, err := c.dec.ReadValue()
	if err != nil {
		return nil, err
	}
	switch v.Kind() {
	case '"':
		end := int(c.dec.InputOffset())
		return c.body[end-len(v) : end], nil
	case 'n':
		return nil, nil
	}
	return nil, c.wrongKind(v, "a string")
}

// unquoteKey returns a key that str read, unescaped: in c.key when it has escapes.
func (c *checker) unquoteKey(v []byte) []byte {
	switch {
	case v == nil:
		return nil
	case !hasEscape(v):
		return v[1 : len(v)-1]
	}
	c.key, _ = jsontext.AppendUnquote(c.key[:0], v) // valid: the decoder read it
	return c.key
}

// hasEscape reports whether the JSON string v (read and validated by the decoder) has escapes: without any, its
// content is its value.
func hasEscape(v jsontext.Value) bool { return bytes.IndexByte(v, '\\') >= 0 }

// wrongKind returns the error for v, the value just read, where want belongs.
func (c *checker) wrongKind(v jsontext.Value, want string) error {
	return fmt.Errorf("%s is %s, want %s", c.where(), clip(v), want)
}

// where names the value or member name just read, for an error message: a JSON pointer.
func (c *checker) where() string {
	if p := c.dec.StackPointer(); p != "" {
		return strconv.Quote(string(p))
	}
	return "the answer"
}

// end checks that nothing but whitespace follows the value just read.
func (c *checker) end() error {
	switch _, err := c.dec.ReadToken(); {
	case err == io.EOF:
		return nil
	case err != nil:
		return err
	default:
		return errors.New("data after the answer")
	}
}

// eofIsUnexpected turns the decoder's io.EOF at the start of an empty answer into an error that says so.
func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
