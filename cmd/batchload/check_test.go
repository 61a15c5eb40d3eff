package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/internal/race"
)

// Answers to edit in the tables below: each case replaces one piece of a right answer.
const (
	echoStep0 = `{"key":"s0","status":200,"response":{"ok":true,"result":{"n":0}}}`
	echoStep1 = `{"key":"s1","status":200,"response":{"ok":true,"result":{"n":1}}}`
	addStep0  = `{"key":"s0","status":200,"response":{"ok":true,"result":{"new_id":7}}}`
	addStep1  = `{"key":"s1","status":200,"response":{"ok":true,"result":{"new_id":8}}}`
)

// batchOf is the batch answer with these results.
func batchOf(results ...string) []byte {
	return []byte(`{"responses":[` + strings.Join(results, ",") + `]}`)
}

func TestCheckBatchAnswers(t *testing.T) {
	echo := batchSpec{kind: batchEcho, steps: 2}
	indep := batchSpec{kind: batchIndependent, steps: 2, prefix: fastPrefix}
	chain := batchSpec{kind: batchChain, steps: 2, prefix: slowPrefix}
	// echo1 is echoStep1 with its response replaced.
	echo1 := func(response string) []byte {
		return batchOf(echoStep0, `{"key":"s1","status":200,"response":`+response+`}`)
	}
	// add1 is addStep1 with its result replaced.
	add1 := func(result string) []byte {
		return batchOf(addStep0, `{"key":"s1","status":200,"response":{"ok":true,"result":`+result+`}}`)
	}
	for _, tc := range []struct {
		name    string
		spec    batchSpec
		body    string
		wantErr string // "" for a right answer
	}{
		// Right answers.
		{"echo", echo, string(batchOf(echoStep0, echoStep1)), ""},
		{"independent", indep, string(batchOf(addStep0, addStep1)), ""},
		{"independent ids in any order", indep, string(add1(`{"new_id":3}`)), ""},
		{"chain", chain, string(batchOf(addStep0, addStep1)), ""},
		{"members in any order, blanks", echo, "\n{ \"responses\" : [\n\t{\"response\": {\"result\": {\"n\": 0}, \"ok\": true}, \"status\": 200, \"key\": \"s0\"},\r\n" + echoStep1 + " ] }\n", ""},
		{"other members skipped, whatever they hold", echo, `{"critical_path_ms":0.7,"atomic":{"committed":false,"rollback_failures":[]},"responses":[` +
			`{"key":"s0","status":200,"response":{"ok":true,"result":{"n":0,"echo":[{"x":null}]},"next_offset":0},"rolled_back":false,"timing":{"queued_ms":0,"started_ms":0.1,"duration_ms":0.4}},` +
			echoStep1 + `],"x":"Ok","Zresponses":1}`, ""},
		{"escaped key and names", echo, `{"respons\u0065s":[{"key":"s\u0030","status":200,"response":{"\u006fk":true,"result":{"n":0}}},` + echoStep1 + `]}`, ""},
		{"the member of result the kind does not read may be null", echo, string(echo1(`{"ok":true,"result":{"n":1,"new_id":null}}`)), ""},
		{"the member of result the kind does not read is type-checked", echo, string(echo1(`{"ok":true,"result":{"n":1,"new_id":"7"}}`)), `"/responses/1/response/result/new_id" is "7", want an integer`},
		{"an echo answer with a new_id", echo, string(echo1(`{"ok":true,"result":{"n":1,"new_id":7}}`)), ""},

		// HTTP and the whole answer.
		{"empty", echo, ``, "unexpected batch answer: unexpected EOF"},
		{"blank", echo, " \n", "unexpected batch answer: unexpected EOF"},
		{"not JSON", echo, `nope`, "unexpected batch answer"},
		{"an array", echo, `[` + echoStep0 + `,` + echoStep1 + `]`, "the answer is [{"},
		{"a string", echo, `"responses"`, `the answer is "responses", want an object`},
		{"null", echo, `null`, "batch answer has 0 results, want 2"},
		{"trailing garbage", echo, string(batchOf(echoStep0, echoStep1)) + "x", "invalid character 'x'"},
		{"a second value", echo, string(batchOf(echoStep0, echoStep1)) + " {}", "data after the answer"},
		{"trailing comma", echo, `{"responses":[` + echoStep0 + `,` + echoStep1 + `,]}`, "unexpected batch answer"},
		{"invalid UTF-8 in a member the check skips", echo, `{"x":"` + "\xff" + `","responses":[` + echoStep0 + `,` + echoStep1 + `]}`, "invalid UTF-8"},
		{"invalid UTF-8 in a key", echo, string(batchOf(`{"key":"s`+"\xc0"+`","status":200,"response":{"ok":true,"result":{"n":0}}}`, echoStep1)), "invalid UTF-8"},
		{"a lone surrogate", echo, string(batchOf(`{"key":"\ud800","status":200,"response":{"ok":true,"result":{"n":0}}}`, echoStep1)), "surrogate"},

		// Results.
		{"no responses", echo, `{}`, "batch answer has 0 results, want 2"},
		{"responses null", echo, `{"responses":null}`, "batch answer has 0 results, want 2"},
		{"responses an object", echo, `{"responses":{}}`, `"/responses" is {}, want an array`},
		{"too few results", echo, string(batchOf(echoStep0)), "batch answer has 1 results, want 2"},
		{"too many results", echo, string(batchOf(echoStep0, echoStep1, echoStep1)), "batch answer has 3 results, want 2"},
		{"a result null", echo, string(batchOf(echoStep0, `null`)), `result 1 has key "", want "s1"`},
		{"a result a number", echo, string(batchOf(echoStep0, `1`)), `"/responses/1" is 1, want an object`},

		// key, status, response.
		{"results out of request order", echo, string(batchOf(echoStep1, echoStep0)), `result 0 has key "s1", want "s0" (request order)`},
		{"no key", echo, string(batchOf(echoStep0, `{"status":200,"response":{"ok":true,"result":{"n":1}}}`)), `result 1 has key "", want "s1"`},
		{"key null", echo, string(batchOf(echoStep0, `{"key":null,"status":200,"response":{"ok":true,"result":{"n":1}}}`)), `result 1 has key "", want "s1"`},
		{"key a number", echo, string(batchOf(echoStep0, `{"key":1,"status":200,"response":{"ok":true,"result":{"n":1}}}`)), `"/responses/1/key" is 1, want a string`},
		{"no status", echo, string(batchOf(echoStep0, `{"key":"s1","response":{"ok":true,"result":{"n":1}}}`)), `step s1: status 0: {"ok":true,"result":{"n":1}}`},
		{"status not 200, the step's response quoted", echo, string(batchOf(echoStep0, `{"key":"s1","status":424,"response": {"ok":false,"result":{"error":4240,"description":"dependency s0 failed"}} }`)),
			`step s1: status 424: {"ok":false,"result":{"error":4240,"description":"dependency s0 failed"}}`},
		{"status a string", echo, string(batchOf(echoStep0, `{"key":"s1","status":"200","response":{"ok":true,"result":{"n":1}}}`)), `"/responses/1/status" is "200", want an integer`},
		{"status 200.0", echo, string(batchOf(echoStep0, `{"key":"s1","status":200.0,"response":{"ok":true,"result":{"n":1}}}`)), `"/responses/1/status" is 200.0, want an integer of`},
		{"status 2e2", echo, string(batchOf(echoStep0, `{"key":"s1","status":2e2,"response":{"ok":true,"result":{"n":1}}}`)), `is 2e2, want an integer of`},
		{"no response", echo, string(batchOf(echoStep0, `{"key":"s1","status":200}`)), "step s1: ok is not true"},
		{"response null", echo, string(echo1(`null`)), "step s1: ok is not true: null"},
		{"response an array", echo, string(echo1(`[]`)), `"/responses/1/response" is [], want an object`},

		// The envelope.
		{"no ok", echo, string(echo1(`{"result":{"n":1}}`)), `step s1: ok is not true: {"result":{"n":1}}`},
		{"ok false", echo, string(echo1(`{"ok":false,"result":{"n":1}}`)), "step s1: ok is not true"},
		{"ok null", echo, string(echo1(`{"ok":null,"result":{"n":1}}`)), "step s1: ok is not true"},
		{"ok a string", echo, string(echo1(`{"ok":"true","result":{"n":1}}`)), `"/responses/1/response/ok" is "true", want a boolean`},
		{"ok a number", echo, string(echo1(`{"ok":1,"result":{"n":1}}`)), `is 1, want a boolean`},
		{"no result", indep, string(batchOf(addStep0, `{"key":"s1","status":200,"response":{"ok":true}}`)), "step s1: no positive result.new_id"},
		{"result null", indep, string(add1(`null`)), "step s1: no positive result.new_id"},
		{"result an array", indep, string(add1(`[8]`)), `"/responses/1/response/result" is [8], want an object`},
		{"result a string", indep, string(add1(`"8"`)), `is "8", want an object`},

		// new_id.
		{"no new_id", indep, string(add1(`{}`)), "step s1: no positive result.new_id: {"},
		{"new_id null", indep, string(add1(`{"new_id":null}`)), "no positive result.new_id"},
		{"new_id 0", indep, string(add1(`{"new_id":0}`)), "no positive result.new_id"},
		{"new_id -0", indep, string(add1(`{"new_id":-0}`)), "no positive result.new_id"},
		{"new_id negative", indep, string(add1(`{"new_id":-8}`)), "no positive result.new_id"},
		{"new_id not an integer", indep, string(add1(`{"new_id":8.5}`)), "is 8.5, want an integer of 64 bits"},
		{"new_id with an exponent", indep, string(add1(`{"new_id":8e0}`)), "is 8e0, want an integer of 64 bits"},
		{"new_id over int64", indep, string(add1(`{"new_id":9223372036854775808}`)), "want an integer of 64 bits"},
		{"new_id a string", indep, string(add1(`{"new_id":"8"}`)), `is "8", want an integer`},
		{"new_id in a chain not after the step before", chain, string(add1(`{"new_id":7}`)), "step s1: new_id 7 not after the previous step's 7: the chain did not run in order"},
		{"new_id in a chain before the step before", chain, string(add1(`{"new_id":6}`)), "the chain did not run in order"},
		{"new_id n in the upstream's answer is type-checked", indep, string(add1(`{"new_id":8,"n":true}`)), `"/responses/1/response/result/n" is true, want an integer`},

		// The echoed payload.
		{"echo: no n", echo, string(echo1(`{"ok":true,"result":{}}`)), `step s1: echo result is not {"n": 1}: {"ok":true,"result":{}}`},
		{"echo: n null", echo, string(echo1(`{"ok":true,"result":{"n":null}}`)), `echo result is not {"n": 1}`},
		{"echo: another n", echo, string(echo1(`{"ok":true,"result":{"n":0}}`)), `echo result is not {"n": 1}`},
		{"echo: n 1.0", echo, string(echo1(`{"ok":true,"result":{"n":1.0}}`)), `is 1.0, want an integer of`},
		{"echo: n a string", echo, string(echo1(`{"ok":true,"result":{"n":"1"}}`)), `is "1", want an integer`},

		// Duplicate names, at every level and in what the check skips.
		{"duplicate responses", echo, `{"responses":[],"responses":[` + echoStep0 + `,` + echoStep1 + `]}`, `duplicate object member name "responses"`},
		{"duplicate key", echo, string(batchOf(echoStep0, `{"key":"s0","key":"s1","status":200,"response":{"ok":true,"result":{"n":1}}}`)), `duplicate object member name "key"`},
		{"duplicate status", echo, string(batchOf(echoStep0, `{"key":"s1","status":500,"status":200,"response":{"ok":true,"result":{"n":1}}}`)), `duplicate object member name "status"`},
		{"duplicate ok", echo, string(echo1(`{"ok":false,"ok":true,"result":{"n":1}}`)), `duplicate object member name "ok"`},
		{"duplicate n", echo, string(echo1(`{"ok":true,"result":{"n":0,"n":1}}`)), `duplicate object member name "n"`},
		{"duplicate escaped", echo, string(echo1(`{"ok":false,"o\u006b":true,"result":{"n":1}}`)), `duplicate object member name "ok"`},
		{"duplicate in a skipped member", echo, `{"atomic":{"a":1,"a":2},"responses":[` + echoStep0 + `,` + echoStep1 + `]}`, `duplicate object member name "a"`},

		// Names that encoding/json matched ignoring case.
		{"OK", echo, string(echo1(`{"OK":true,"result":{"n":1}}`)), `"/responses/1/response/OK": member names are case-sensitive, want "ok"`},
		{"ok and OK", echo, string(echo1(`{"ok":true,"OK":false,"result":{"n":1}}`)), `member names are case-sensitive, want "ok"`},
		{"Responses", echo, `{"Responses":[` + echoStep0 + `,` + echoStep1 + `]}`, `want "responses"`},
		{"Key", echo, string(batchOf(echoStep0, `{"Key":"s1","status":200,"response":{"ok":true,"result":{"n":1}}}`)), `want "key"`},
		{"KEY with a Kelvin sign", echo, string(batchOf(echoStep0, `{"key":"s1","\u212aey":"s0","status":200,"response":{"ok":true,"result":{"n":1}}}`)), `want "key"`},
		{"status with a long s", echo, string(batchOf(echoStep0, `{"key":"s1","status":200,"ſtatus":500,"response":{"ok":true,"result":{"n":1}}}`)), `want "status"`},
		{"Response", echo, string(batchOf(echoStep0, `{"key":"s1","status":200,"Response":{"ok":true,"result":{"n":1}}}`)), `want "response"`},
		{"Result", echo, string(echo1(`{"ok":true,"Result":{"n":1}}`)), `want "result"`},
		{"N", echo, string(echo1(`{"ok":true,"result":{"N":1}}`)), `want "n"`},
		{"NEW_ID", indep, string(add1(`{"NEW_ID":8}`)), `want "new_id"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkBatch(tc.spec, 200, []byte(tc.body))
			if tc.wantErr == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tc.wantErr)
			}
			agree(t, []byte(tc.body), err, refCheckBatch(tc.spec, 200, []byte(tc.body)))
		})
	}
}

func TestCheckBatchRefusesEveryTruncation(t *testing.T) {
	for _, body := range [][]byte{batchOf(echoStep0, echoStep1), echoAnswer(3)} {
		for n := range len(body) {
			assert.Error(t, checkBatch(batchSpec{kind: batchEcho, steps: 2}, 200, body[:n]), "%s", body[:n])
		}
	}
}

func TestCheckBatchRefusesAnotherHTTPStatus(t *testing.T) {
	err := checkBatch(batchSpec{kind: batchEcho, steps: 2}, 503, []byte(`{"ok":false,"result":{"error":5030}}`))
	assert.EqualError(t, err, `batch answered HTTP 503: {"ok":false,"result":{"error":5030}}`)
}

func TestCheckEchoAndNewID(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      string
		echoErr   string // checkEcho(body, 3); "" if right
		newIDErr  string // checkNewID(body); "" if right
		wantNewID int64
	}{
		{"echo", `{"ok":true,"result":{"n":3}}`, "", "no positive result.new_id", 0},
		{"new_id", `{"ok":true,"result":{"new_id":12}}`, `echo result is not {"n": 3}`, "", 12},
		{"both, other members, blanks", " {\"result\": {\"new_id\": 12, \"n\": 3, \"x\": [1]}, \"ok\": true, \"total\": 1}\n", "", "", 12},
		{"empty", ``, "unexpected answer: unexpected EOF", "unexpected answer: unexpected EOF", 0},
		{"an array", `[]`, "the answer is [], want an object", "the answer is [], want an object", 0},
		{"null", `null`, "ok is not true", "ok is not true", 0},
		{"ok false", `{"ok":false,"result":{"n":3,"new_id":12}}`, "ok is not true", "ok is not true", 0},
		{"ok missing", `{"result":{"n":3,"new_id":12}}`, "ok is not true", "ok is not true", 0},
		{"ok a string", `{"ok":"true","result":{"n":3,"new_id":12}}`, `"/ok" is "true", want a boolean`, "want a boolean", 0},
		{"result null", `{"ok":true,"result":null}`, `echo result is not {"n": 3}`, "no positive result.new_id", 0},
		{"result an array", `{"ok":true,"result":[3]}`, `"/result" is [3], want an object`, "want an object", 0},
		{"n another", `{"ok":true,"result":{"n":4,"new_id":12}}`, `echo result is not {"n": 3}`, "", 12},
		{"n 3.0", `{"ok":true,"result":{"n":3.0,"new_id":12}}`, "is 3.0, want an integer of", "is 3.0, want an integer of", 0},
		{"new_id 0", `{"ok":true,"result":{"n":3,"new_id":0}}`, "", "no positive result.new_id", 0},
		{"new_id negative", `{"ok":true,"result":{"n":3,"new_id":-12}}`, "", "no positive result.new_id", 0},
		{"new_id 12.5", `{"ok":true,"result":{"n":3,"new_id":12.5}}`, "is 12.5, want an integer of 64 bits", "is 12.5, want an integer of 64 bits", 0},
		{"trailing garbage", `{"ok":true,"result":{"n":3,"new_id":12}}}`, "unexpected answer", "unexpected answer", 0},
		{"truncated", `{"ok":true,"result":{"n":3,"new_id":12}`, "unexpected EOF", "unexpected EOF", 0},
		{"duplicate ok", `{"ok":false,"ok":true,"result":{"n":3,"new_id":12}}`, `duplicate object member name "ok"`, `duplicate object member name "ok"`, 0},
		{"duplicate new_id", `{"ok":true,"result":{"n":3,"new_id":0,"new_id":12}}`, `duplicate object member name "new_id"`, `duplicate object member name "new_id"`, 0},
		{"Ok", `{"Ok":true,"result":{"n":3,"new_id":12}}`, `want "ok"`, `want "ok"`, 0},
		{"New_ID", `{"ok":true,"result":{"n":3,"New_ID":12}}`, `want "new_id"`, `want "new_id"`, 0},
		{"invalid UTF-8", `{"ok":true,"result":{"n":3,"new_id":12,"name":"` + "\xe2\x82" + `"}}`, "invalid UTF-8", "invalid UTF-8", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			err := checkEcho(body, 3)
			if tc.echoErr == "" {
				assert.NoError(t, err, "checkEcho")
			} else {
				assert.ErrorContains(t, err, tc.echoErr, "checkEcho")
			}
			agree(t, body, err, refCheckEcho(body, 3))
			id, err := checkNewID(body)
			if tc.newIDErr == "" {
				assert.NoError(t, err, "checkNewID")
			} else {
				assert.ErrorContains(t, err, tc.newIDErr, "checkNewID")
			}
			assert.Equal(t, tc.wantNewID, id)
			_, refErr := refCheckNewID(body)
			agree(t, body, err, refErr)
		})
	}
}

// TestChecksAllocateNothing: a right answer, other members included, costs the tool no allocation.
func TestChecksAllocateNothing(t *testing.T) {
	if race.Enabled() {
		t.Skip("allocation counts are meaningless under -race")
	}
	echo10 := echoAnswer(10)
	rich := []byte(`{"critical_path_ms":0.7,"responses":[{"key":"s\u0030","status":200,"response":{"ok":true,"result":{"new_id":1,"name":"x"}},"timing":{"queued_ms":0}}]}`)
	direct := []byte(`{"ok":true,"result":{"new_id":1,"n":0}}`)
	for name, f := range map[string]func() error{
		"checkBatch echo":   func() error { return checkBatch(batchSpec{kind: batchEcho, steps: 10}, 200, echo10) },
		"checkBatch new_id": func() error { return checkBatch(batchSpec{kind: batchChain, steps: 1}, 200, rich) },
		"checkEcho":         func() error { return checkEcho(direct, 0) },
		"checkNewID":        func() error { _, err := checkNewID(direct); return err },
	} {
		require.NoError(t, f(), name)
		assert.Zero(t, testing.AllocsPerRun(100, func() { _ = f() }), name)
	}
}

// Example_checkBatch shows what an error about a step says: the step, what is wrong, and its response as sent.
func Example_checkBatch() {
	spec := batchSpec{kind: batchChain, steps: 2, prefix: slowPrefix}
	fmt.Println(checkBatch(spec, 200, batchOf(addStep1, `{"key":"s1","status":200,"response":{"ok":true,"result":{"new_id":8}}}`)))
	fmt.Println(checkBatch(spec, 200, batchOf(addStep0, `{"key":"s1", "status":200, "response": {"ok":false,"result":{"error":1008}}}`)))
	// Output:
	// result 0 has key "s1", want "s0" (request order)
	// step s1: ok is not true: {"ok":false,"result":{"error":1008}}
}
