package planner

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchBody builds a batch of n steps in the canonical form. shape is "independent" (no references), "chain" (each
// step uses the previous one's result.new_id) or "diamond" (layers of 10, each step using two of the layer before).
func benchBody(shape string, n int) []byte {
	b := []byte(`{"stop_on_error":false,"requests":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		key := "Step" + strconv.Itoa(i)
		b = append(b, `{"key":"`+key+`","path":"Producer/Add","headers":{"X-Trace":"t`+strconv.Itoa(i)+`"},"payload":`...)
		switch {
		case shape == "chain" && i > 0:
			b = append(b, `{"name":"Coca-Cola","parent":"${Step`+strconv.Itoa(i-1)+`.result.new_id}","tags":["a","b"]}`...)
		case shape == "diamond" && i >= 10:
			prev := (i/10 - 1) * 10
			a, c := prev+i%10, prev+(i+1)%10
			b = append(b, `{"name":"copy of ${Step`+strconv.Itoa(a)+`.result.name}","ids":["${Step`+strconv.Itoa(c)+
				`.result.new_id}"],"tags":["a","b"]}`...)
		default:
			b = append(b, `{"name":"Coca-Cola","parent":7,"tags":["a","b"]}`...)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// demoBody is the body of the demo10 load scenario (transport's BenchmarkServeBatchDemo10): n short steps calling
// the demo API's Demo/Echo, each a few dozen bytes.
func demoBody(n int) []byte {
	b := []byte(`{"stop_on_error":false,"requests":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"key":"s`+strconv.Itoa(i)+`","path":"Demo/Echo","payload":{"n":`+strconv.Itoa(i)+`}}`...)
	}
	return append(b, "]}"...)
}

func BenchmarkPlan(b *testing.B) {
	cases := []struct {
		name  string
		shape string
		n     int
	}{
		{"independent", "independent", 50},
		{"chain", "chain", 50},
		{"diamond", "diamond", 50},
		{"independent-10", "independent", 10},
		{"independent-50", "independent", 50},
		{"independent-200", "independent", 200},
		{"demo-10", "demo", 10},
		{"demo-50", "demo", 50},
	}
	for _, c := range cases {
		body := benchBody(c.shape, c.n)
		if c.shape == "demo" {
			body = demoBody(c.n)
		}
		cfg := Config{MaxSteps: max(c.n, DefaultMaxSteps)}
		if _, err := Parse(body, cfg); err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := Parse(body, cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkJSONFloorDecode is the yardstick: decoding the same 50-step body with encoding/json into any, which
// checks nothing.
func BenchmarkJSONFloorDecode(b *testing.B) {
	body := benchBody("independent", 50)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}

// benchResponses serves every step the same small REGOS answer.
type benchResponses struct{ body []byte }

func (r benchResponses) all() *Responses { return bodiesOf(func(int) []byte { return r.body }) }

func BenchmarkAppend(b *testing.B) {
	plan, err := Parse(benchBody("diamond", 50), Config{})
	if err != nil {
		b.Fatal(err)
	}
	// One Responses for every run, as a batch keeps one: each response is indexed by its first lookup.
	r := benchResponses{[]byte(`{"ok":true,"result":{"new_id":4,"name":"Coca-Cola","last_update":1758289402},"total":1}`)}.all()
	step := plan.Steps[len(plan.Steps)-1]
	buf := make([]byte, 0, 256)
	b.Run("templated", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if buf, err = step.Body.Append(buf[:0], r); err != nil {
				b.Fatal(err)
			}
		}
	})
	static := plan.Steps[0]
	b.Run("static", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = static.Body.Append(buf[:0], r)
		}
	})
}

// BenchmarkResolveLargeResponse resolves a payload of 1000 placeholders, each naming another element of a large
// response (${A.result.<i>.id}), as a fresh batch would: the response is indexed by the first placeholder, once,
// and every other one is a lookup in that index. ns/placeholder is the figure that must not grow with the
// response: the per-batch index costs once per response (index-ns), whatever the number of placeholders.
func BenchmarkResolveLargeResponse(b *testing.B) {
	const placeholders = 1000
	var payload strings.Builder
	payload.WriteString("[")
	for i := range placeholders {
		if i > 0 {
			payload.WriteString(",")
		}
		fmt.Fprintf(&payload, `"${A.result.%d.id}"`, i)
	}
	payload.WriteString("]")
	plan, err := Parse([]byte(`[{"key":"A","path":"a"},{"key":"B","path":"b","payload":`+payload.String()+`}]`),
		Config{MaxPayload: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{64 << 10, 1 << 20, 8 << 20} {
		body := largeResponse(size)
		b.Run(fmt.Sprintf("response=%dKiB", size>>10), func(b *testing.B) {
			var index time.Duration
			for b.Loop() {
				r := NewResponses(2, func(int) []byte { return body }, nil)
				t0 := time.Now()
				if _, err := r.value(&plan.Steps[1].Body.refs[0]); err != nil { // the first lookup indexes
					b.Fatal(err)
				}
				index += time.Since(t0)
				if _, err := plan.Steps[1].Body.Resolve(r, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(index.Nanoseconds())/float64(b.N), "index-ns")
			b.ReportMetric((float64(b.Elapsed().Nanoseconds())-float64(index.Nanoseconds()))/float64(b.N)/placeholders, "ns/placeholder")
		})
	}
}

// largeResponse is a REGOS answer of about size bytes: {"ok":true,"result":[{"id":0,"name":"…"},…]}.
func largeResponse(size int) []byte {
	b := []byte(`{"ok":true,"result":[`)
	for i := 0; len(b) < size; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"id":%d,"name":"producer %d","tags":["a","b"]}`, i, i)
	}
	return append(b, "]}"...)
}

// BenchmarkGraph is what the dependency graph of record costs a plan: every step a vertex of a heimdalr/dag DAG,
// every dependency an edge (the DAG refusing the edges that would close a cycle), and the levels read from it in
// topological order. Parse pays it once per batch.
func BenchmarkGraph(b *testing.B) {
	for _, shape := range []string{"independent", "chain", "diamond"} {
		for _, n := range []int{10, 50} {
			plan, err := Parse(benchBody(shape, n), Config{})
			if err != nil {
				b.Fatal(err)
			}
			deps := make([][]int, len(plan.Steps))
			for i, s := range plan.Steps {
				deps[i] = s.Deps
			}
			id := func(i int) string { return plan.Steps[i].Key }
			b.Run(fmt.Sprintf("%s-%d", shape, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					var probs problems
					g := graph(deps, id, &probs)
					if len(probs.list) > 0 {
						b.Fatal(probs.list)
					}
					(&Plan{Steps: make([]Step, len(deps)), graph: g}).Levels()
				}
			})
		}
	}
}
