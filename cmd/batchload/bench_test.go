package main

import (
	"fmt"
	"strings"
	"testing"
)

func echoAnswer(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"responses":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"key":"s%d","status":200,"response":{"ok":true,"result":{"n":%d}}}`, i, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func BenchmarkCheckBatchEcho10(b *testing.B) {
	spec := batchSpec{kind: batchEcho, steps: 10}
	body := echoAnswer(10)
	b.ReportAllocs()
	for b.Loop() {
		if err := checkBatch(spec, 200, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckBatchNewID50(b *testing.B) {
	spec := batchSpec{kind: batchIndependent, steps: 50, prefix: fastPrefix}
	keys := make([]string, 50)
	st := make([]int, 50)
	ids := make([]int64, 50)
	for i := range keys {
		keys[i], st[i], ids[i] = stepKey(i), 200, int64(i+1)
	}
	body := answer(keys, st, ids)
	b.ReportAllocs()
	for b.Loop() {
		if err := checkBatch(spec, 200, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckEcho1(b *testing.B) {
	body := []byte(`{"ok":true,"result":{"n":0}}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := checkEcho(body, 0); err != nil {
			b.Fatal(err)
		}
	}
}
