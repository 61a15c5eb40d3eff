package idempotency

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix namespaces batchd's keys in a Redis shared with other programs.
const DefaultRedisPrefix = "batchd:idempotency:"

// Redis is the Store shared by every replica that uses the same Redis: a retry that reaches another replica is
// replayed there, and a batch running on one replica is busy on all of them.
//
// Each key is one Redis string, whose expiry is the entry's: a running entry lives for the claim's lease (so the
// claim of a replica that crashed mid-batch expires on its own), a done entry for the TTL. Claim, Complete and
// Release are Lua scripts, each one atomic step on one key (so they work on Redis Cluster too); Complete and
// Release act only when the key still holds the caller's own running entry, compared byte for byte, token
// included. Values are
//
//	running:    "r1:" <fingerprint, hex> ":" <token>
//	done:       "d1:" <fingerprint, hex> ":" <status, 3 digits> ":" <content type> "\n" <body>
//	not stored: "n1:" <fingerprint, hex> ":" <status, 3 digits>
//
// readable with redis-cli, and with no base64 cost on the body.
type Redis struct {
	c      redis.Scripter
	prefix string
}

var _ Store = (*Redis)(nil)

// NewRedis returns a Store on c (a *redis.Client, *redis.ClusterClient, …) whose keys start with prefix (empty:
// DefaultRedisPrefix). The caller owns c and closes it.
func NewRedis(c redis.Scripter, prefix string) *Redis {
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	return &Redis{c: c, prefix: prefix}
}

// claimScript: ARGV[1] the running value, ARGV[2] the lease in ms. Returns 1 when claimed, else the value found.
var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

// completeScript: ARGV[1] the claim's running value, ARGV[2] the done value, ARGV[3] the TTL in ms.
var completeScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`)

// releaseScript: ARGV[1] the claim's running value.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])`)

// Claim implements Store.
func (s *Redis) Claim(ctx context.Context, key string, fp Fingerprint, lease time.Duration) (Entry, bool, error) {
	e := Entry{Fingerprint: fp, Token: newToken()}
	res, err := claimScript.Run(ctx, s.c, []string{s.prefix + key}, encodeRunning(e), ms(lease)).Result()
	if err != nil {
		return Entry{}, false, fmt.Errorf("idempotency: redis claim: %w", err)
	}
	switch v := res.(type) {
	case int64:
		return e, true, nil
	case string:
		found, err := decode([]byte(v))
		return found, false, err
	default:
		return Entry{}, false, fmt.Errorf("idempotency: redis claim: unexpected reply %T", res)
	}
}

// Complete implements Store.
func (s *Redis) Complete(ctx context.Context, key string, claim Entry, a Answer, ttl time.Duration) (bool, error) {
	if strings.ContainsAny(a.ContentType, "\r\n") || a.Status < 100 || a.Status > 999 {
		return false, errors.New("idempotency: an answer needs a 3-digit status and a content type without line breaks")
	}
	done := claim
	done.Done, done.Answer = true, a
	n, err := completeScript.Run(ctx, s.c, []string{s.prefix + key}, encodeRunning(claim), encodeDone(done), ms(ttl)).Int()
	if err != nil {
		return false, fmt.Errorf("idempotency: redis complete: %w", err)
	}
	return n == 1, nil
}

// Release implements Store.
func (s *Redis) Release(ctx context.Context, key string, claim Entry) error {
	if err := releaseScript.Run(ctx, s.c, []string{s.prefix + key}, encodeRunning(claim)).Err(); err != nil {
		return fmt.Errorf("idempotency: redis release: %w", err)
	}
	return nil
}

// ms is d in whole milliseconds, at least 1 (PX refuses 0).
func ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

func encodeRunning(e Entry) string {
	return "r1:" + hex.EncodeToString(e.Fingerprint[:]) + ":" + e.Token
}

func encodeDone(e Entry) []byte {
	if e.Answer.NotStored {
		return fmt.Appendf([]byte("n1:"+hex.EncodeToString(e.Fingerprint[:])), ":%03d", e.Answer.Status)
	}
	b := make([]byte, 0, 3+2*len(e.Fingerprint)+6+len(e.Answer.ContentType)+1+len(e.Answer.Body))
	b = append(b, "d1:"...)
	b = hex.AppendEncode(b, e.Fingerprint[:])
	b = append(b, ':')
	b = fmt.Appendf(b, "%03d", e.Answer.Status)
	b = append(b, ':')
	b = append(b, e.Answer.ContentType...)
	b = append(b, '\n')
	return append(b, e.Answer.Body...)
}

var errCorrupt = errors.New("idempotency: redis value in an unknown format")

// decode parses a value written by encodeRunning or encodeDone.
func decode(v []byte) (Entry, error) {
	const fpHex = 2 * len(Fingerprint{})
	var e Entry
	if len(v) < 3+fpHex+1 || v[3+fpHex] != ':' {
		return e, errCorrupt
	}
	kind, rest := string(v[:3]), v[3+fpHex+1:]
	if _, err := hex.Decode(e.Fingerprint[:], v[3:3+fpHex]); err != nil {
		return e, errCorrupt
	}
	switch kind {
	case "r1:":
		e.Token = string(rest)
		return e, nil
	case "d1:":
		if len(rest) < 4 || !isDigits(rest[:3]) || rest[3] != ':' {
			return e, errCorrupt
		}
		status, _ := strconv.Atoi(string(rest[:3]))
		nl := bytes.IndexByte(rest[4:], '\n')
		if nl < 0 {
			return e, errCorrupt
		}
		e.Done = true
		e.Answer = Answer{Status: status, ContentType: string(rest[4 : 4+nl]), Body: rest[4+nl+1:]}
		return e, nil
	case "n1:":
		if len(rest) != 3 || !isDigits(rest) {
			return e, errCorrupt
		}
		status, _ := strconv.Atoi(string(rest))
		e.Done, e.Answer = true, Answer{Status: status, NotStored: true}
		return e, nil
	default:
		return e, errCorrupt
	}
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
