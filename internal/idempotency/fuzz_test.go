package idempotency

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzRedisValue: decode never panics on whatever a Redis key holds, and every answer Complete accepts comes back
// from decode as it went in.
func FuzzRedisValue(f *testing.F) {
	fp := NewFingerprint(false, []byte("seed"))
	f.Add([]byte(encodeRunning(Entry{Fingerprint: fp, Token: "t"})), uint16(200), "application/json", []byte(`{"responses":[]}`))
	f.Add(encodeDone(Entry{Fingerprint: fp, Done: true, Answer: Answer{Status: 200, ContentType: "a/b", Body: []byte("\n")}}),
		uint16(599), "", []byte{})
	f.Add([]byte("d1:"), uint16(100), "text/plain; charset=utf-8", []byte("\x00\xff"))
	f.Fuzz(func(t *testing.T, raw []byte, status uint16, contentType string, body []byte) {
		_, _ = decode(raw)

		if status < 100 || status > 999 || strings.ContainsAny(contentType, "\r\n") {
			return // refused by Complete
		}
		in := Entry{Fingerprint: NewFingerprint(false, raw), Done: true,
			Answer: Answer{Status: int(status), ContentType: contentType, Body: body}}
		out, err := decode(encodeDone(in))
		if err != nil {
			t.Fatalf("decode(encodeDone(%+v)): %v", in, err)
		}
		if out.Fingerprint != in.Fingerprint || !out.Done || out.Answer.Status != in.Answer.Status ||
			out.Answer.ContentType != in.Answer.ContentType || !bytes.Equal(out.Answer.Body, in.Answer.Body) {
			t.Fatalf("round trip: got %+v, want %+v", out, in)
		}
	})
}
