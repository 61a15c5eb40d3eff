package idempotency

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Store keeps one entry per scoped key: a running entry while a batch holds the key, a done entry (the stored
// answer) once it finished. Memory and Redis implement it; every method is safe for concurrent use, and Redis's
// across processes.
type Store interface {
	// Claim reserves key for a run when no live entry holds it: it writes a running entry with fp and a fresh
	// token that lives for lease, and returns it with claimed true. Otherwise it returns the live entry that holds
	// the key, running or done, with claimed false. Check and write are one atomic step.
	Claim(ctx context.Context, key string, fp Fingerprint, lease time.Duration) (e Entry, claimed bool, err error)
	// Complete turns the running entry of claim into a done entry holding a, living for ttl. It stores nothing and
	// reports false when the key no longer holds that very claim (its lease ran out, and perhaps another run
	// claimed the key since). a.Body must not be modified afterwards.
	Complete(ctx context.Context, key string, claim Entry, a Answer, ttl time.Duration) (stored bool, err error)
	// Release deletes the running entry of claim, so that the key can run again at once; it leaves any other entry
	// alone.
	Release(ctx context.Context, key string, claim Entry) error
}

// Entry is what a Store holds under a key.
type Entry struct {
	Fingerprint Fingerprint
	Token       string // the claim's token: only its holder may complete or release it
	Done        bool   // false: a batch is running under the key
	Answer      Answer // when Done
}

// Answer is a batch's answer as the client got it.
type Answer struct {
	Status      int
	ContentType string
	Body        []byte
	// NotStored: the batch ran, but its answer was over the size it may be stored at (Config.MaxAnswer): only its
	// status is kept, so that the key is never run again.
	NotStored bool
}

// Fingerprint identifies what a batch asked for: the same key with another fingerprint is a misuse of the key.
type Fingerprint [sha256.Size]byte

// NewFingerprint is sha256 over the answer's form and the request body. The form is part of it because the same
// body answered as a stream (application/x-ndjson) is another answer than as JSON. stream is the caller's decision,
// the one that picks the answer actually sent (transport.WantsStream), so that the fingerprint cannot disagree
// with it; this package never reads Accept.
//
// The hash input is the "-v1" prefix, then "json" or "ndjson": the input of the answers already stored, which stay
// valid across an upgrade (a new input would make every retry in flight run its batch again).
func NewFingerprint(stream bool, body []byte) Fingerprint {
	form := "json"
	if stream {
		form = "ndjson"
	}
	h := sha256.New()
	h.Write([]byte("batchd-idempotency-v1\x00"))
	h.Write([]byte(form))
	h.Write([]byte{0})
	h.Write(body)
	var fp Fingerprint
	h.Sum(fp[:0])
	return fp
}

// newToken is a claim's token: 128 random bits, so that no other claim of the key, in any process, has it.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
