package idempotency

// ValidKey reports whether k is an acceptable Idempotency-Key: 1–255 printable ASCII characters. Other endpoints
// that honour the header (POST /v1/jobs) use the same rule.
func ValidKey(k string) bool { return validKey(k) }

// ScopedKey is the caller-scoped form of a client's key, as the guard stores it: sha256 of the caller's
// Authorization values, then the key. Other endpoints that honour the header scope their keys the same way.
func ScopedKey(authorization []string, key string) string { return scopedKey(authorization, key) }
