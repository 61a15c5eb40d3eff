package transport

import (
	"crypto/rand"
	"encoding/hex"
)

// newRequestID returns 16 random hex characters, enough to correlate one batch's log lines and upstream calls.
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
