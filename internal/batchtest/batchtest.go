// Package batchtest holds what tests of several packages share: the batch bodies of the engine benchmarks (so that
// the runner's and the transport's figures measure the same batches), the answer as a client decodes it, and the
// batchd binary started for a test (StartBinary).
package batchtest

import (
	"fmt"
	"regexp"
	"strings"
)

// Response is the upstream answer the benchmarks' invokers give every call.
const Response = `{"ok":true,"result":{"new_id":1}}`

// Independent is n steps with no dependencies.
func Independent(n int) string {
	var b strings.Builder
	b.WriteString(`{"requests":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"key":"S%d","path":"Producer/Add","payload":{"name":"producer %d"}}`, i, i)
	}
	b.WriteString("]}")
	return b.String()
}

// Chain is n steps, each using the previous step's new_id; its last step's key is "S<n-1>".
func Chain(n int) string {
	var b strings.Builder
	b.WriteString(`{"requests":[{"key":"S0","path":"Producer/Add","payload":{"name":"producer 0"}}`)
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, `,{"key":"S%d","path":"Producer/Edit","payload":{"id":"${S%d.result.new_id}","name":"producer %d"}}`, i, i-1, i)
	}
	b.WriteString("]}")
	return b.String()
}

// Layered is layers×width steps; each step past the first layer references two steps of the layer before.
func Layered(layers, width int) string {
	var b strings.Builder
	b.WriteString(`{"requests":[`)
	for l := range layers {
		for j := range width {
			if l+j > 0 {
				b.WriteByte(',')
			}
			if l == 0 {
				fmt.Fprintf(&b, `{"key":"L%d_%d","path":"Producer/Add","payload":{"name":"producer %d"}}`, l, j, j)
				continue
			}
			fmt.Fprintf(&b, `{"key":"L%d_%d","path":"Producer/Get","payload":{"ids":["${L%d_%d.result.new_id}","${L%d_%d.result.new_id}"]}}`,
				l, j, l-1, j, l-1, (j+1)%width)
		}
	}
	b.WriteString("]}")
	return b.String()
}

// Shape is a named batch body.
type Shape struct{ Name, Body string }

// Shapes are the three 50-step shapes: independent, chain and diamond (5 layers of 10).
func Shapes() []Shape {
	return []Shape{
		{"independent", Independent(50)},
		{"chain", Chain(50)},
		{"diamond", Layered(5, 10)},
	}
}

// EngineShapes are Shapes plus smaller and larger batches of independent steps.
func EngineShapes() []Shape {
	return append(Shapes(), Shape{"independent-10", Independent(10)}, Shape{"independent-200", Independent(200)})
}

// WithRollbacks gives every step of a batch body a rollback that uses its own response.
func WithRollbacks(body string) string {
	return stepOpen.ReplaceAllString(body, `{"key":"$1","rollback":{"path":"Producer/Delete","payload":{"ids":["$${self.result.new_id}"]}},`)
}

var stepOpen = regexp.MustCompile(`\{"key":"([^"]+)",`)

// WithField sets a batch-level field to true: {"requests":… becomes {"<field>":true,"requests":….
func WithField(body, field string) string {
	return strings.Replace(body, `{"requests":`, `{"`+field+`":true,"requests":`, 1)
}
