// Package idempotency makes a retried batch run once: the Idempotency-Key request header of POST /v1/batch
// (README "Idempotent retries" to "Step timings").
//
// Contract:
//   - A key is 1–255 printable ASCII characters (space to tilde), sent once; anything else is refused with 400
//     (code 4000) before anything runs.
//   - Keys are scoped per caller: the store key is sha256 of the request's Authorization header, then the client's
//     key, so one caller can neither read nor block another's answers. Callers without Authorization share one
//     scope.
//   - The first request with a key claims it and runs. Its answer (status, content type, body) is stored for the
//     TTL when the handler finishes with a 2xx status, also when the client went away mid-run: its retry then sees
//     what ran. A request refused before running (finish with any other status, or never finished because the
//     handler panicked) releases the key, so that the client can fix the request and retry with the same key.
//   - A retry with the same key and the same fingerprint (sha256 of the body and of the answer's form, JSON or
//     NDJSON, as the handler decided it for the answer it sends) gets the stored answer, byte for byte, with its
//     stored status and content type and "Idempotent-Replayed: true", and nothing executes. While the first still
//     runs, a retry gets 409 (code 4090). The same key with another fingerprint gets 422 (code 4220), whether the
//     first is running or done.
//   - A claim lives for a lease (at most the TTL) while its batch runs, so that the claim of a replica that
//     crashed mid-batch expires on its own.
//   - An answer over Config.MaxAnswer is not stored: the key is kept as run, with its status only, and a retry gets
//     409 (code 4091, reason idempotency_answer_not_stored): the batch ran once and is never run again.
//   - Fail closed: when the store cannot be reached, a request with a key gets 503 (code 5030) and nothing runs.
//     Requests without a key never touch the store. An answer that could not be stored is still sent.
//
// Guard implements transport.Idempotency; Memory and Redis implement Store.
package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/batchd/batchd/internal/errcode"
)

// Header names.
const (
	HeaderKey      = "Idempotency-Key"
	HeaderReplayed = "Idempotent-Replayed"
)

// MaxKeyLen is the longest Idempotency-Key accepted.
const MaxKeyLen = 255

// Results counted through Recorder.
const (
	ResultStored    = "stored"     // a batch's answer was stored under its key
	ResultNotStored = "not_stored" // a batch's answer was over MaxAnswer: its key is kept as run, without it
	ResultReplayed  = "replayed"   // a retry got a stored answer
	ResultConflict  = "conflict"   // a retry came while the first still ran, or after an answer not stored: 409
	ResultMismatch  = "mismatch"   // the key came with another body: 422
	ResultError     = "error"      // the store failed: 503, or an answer that could not be stored
)

// Results lists every result Recorder is told, a bounded label set for metrics.
func Results() []string {
	return []string{ResultStored, ResultNotStored, ResultReplayed, ResultConflict, ResultMismatch, ResultError}
}

// DefaultMaxAnswer is the largest answer stored by default (-idempotency-max-answer).
const DefaultMaxAnswer = 4 << 20

// Recorder counts what the guard did; *metrics.Metrics implements it.
type Recorder interface {
	IdempotencyResult(result string)
}

// Config configures a Guard. Zero values mean defaults.
type Config struct {
	Store Store // required
	// TTL is how long an answer is replayed; default 24h.
	TTL time.Duration
	// Lease is how long a claim holds a key while its batch runs (default 2m, at most TTL). Make it longer than the
	// longest batch: a claim that expires mid-run lets a retry run the batch again, and the first answer is then
	// not stored.
	Lease time.Duration
	// Timeout bounds each store call; default 3s.
	Timeout time.Duration
	// MaxAnswer is the largest answer stored; a larger one is remembered as run but not stored. Default
	// DefaultMaxAnswer.
	MaxAnswer int64
	Recorder  Recorder     // optional
	Logger    *slog.Logger // optional
}

// Guard applies the Idempotency-Key contract to batch requests.
type Guard struct {
	store     Store
	maxAnswer int64
	ttl       time.Duration
	lease     time.Duration
	timeout   time.Duration
	rec       Recorder
	log       *slog.Logger
}

// New returns a Guard over cfg.Store.
func New(cfg Config) *Guard {
	g := &Guard{store: cfg.Store, maxAnswer: cfg.MaxAnswer, ttl: cfg.TTL, lease: cfg.Lease, timeout: cfg.Timeout,
		rec: cfg.Recorder, log: cfg.Logger}
	if g.maxAnswer <= 0 {
		g.maxAnswer = DefaultMaxAnswer
	}
	if g.ttl <= 0 {
		g.ttl = 24 * time.Hour
	}
	if g.lease <= 0 {
		g.lease = 2 * time.Minute
	}
	g.lease = min(g.lease, g.ttl)
	if g.timeout <= 0 {
		g.timeout = 3 * time.Second
	}
	if g.rec == nil {
		g.rec = nopRecorder{}
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	return g
}

// Begin is called with a batch request once its body is read, before the batch is planned. stream is the form the
// handler will answer in (true: NDJSON); it is part of the fingerprint, since a stream is another answer than JSON.
// The guard does not read Accept: one decision, the handler's, picks the answer sent and the fingerprint.
//
// When Begin answered the request itself — a replay, a conflict, a bad key, a store failure — answered is true and
// the handler must stop. Otherwise the handler runs the batch and calls finish with the answer it sends; only the
// first call counts, so the handler may also defer finish(0, "", nil) to release the key on every path that did
// not answer (a refused plan, a panic). A 2xx status stores the answer; any other status releases the key. limit is
// the largest answer stored (0 for a request without a key): for an answer over it the handler passes a nil body
// with its 2xx status, and the key is kept as run without its answer. body must not be modified after finish.
// finish is never nil, and is a no-op for a request without a key.
func (g *Guard) Begin(w http.ResponseWriter, r *http.Request, body []byte, stream bool) (finish func(status int, contentType string, body []byte), limit int64, answered bool) {
	keys := r.Header.Values(HeaderKey)
	if len(keys) == 0 {
		return nopFinish, 0, false
	}
	if len(keys) > 1 || !validKey(keys[0]) {
		g.answerError(w, r, errcode.InvalidBatch, "invalid_idempotency_key",
			"Idempotency-Key must be sent once, as 1 to 255 printable ASCII characters; nothing was executed")
		return nil, 0, true
	}
	key := scopedKey(r.Header.Values("Authorization"), keys[0])
	fp := NewFingerprint(stream, body)

	ctx, cancel := context.WithTimeout(r.Context(), g.timeout)
	e, claimed, err := g.store.Claim(ctx, key, fp, g.lease)
	cancel()
	switch {
	case err != nil && r.Context().Err() != nil:
		return nil, 0, true // the client left while we asked the store; nobody reads an answer
	case errors.Is(err, ErrFull):
		g.rec.IdempotencyResult(ResultError)
		g.log.Warn("idempotency store full of running batches", "request_id", requestID(r))
		g.answerError(w, r, errcode.Unavailable, "idempotency_unavailable",
			"the idempotency store is full of running batches; nothing was executed; retry later with the same Idempotency-Key")
		return nil, 0, true
	case err != nil:
		// Fail closed. The client sent a key because a second run would hurt (a payment, an import): running the
		// batch without the guarantee, and so silently losing it whenever the store is down, is worse than asking
		// it to retry. A request without a key does not touch the store, so it is not affected.
		g.rec.IdempotencyResult(ResultError)
		g.log.Error("idempotency store unavailable", "request_id", requestID(r), "err", err)
		g.answerError(w, r, errcode.Unavailable, "idempotency_unavailable",
			"the idempotency store is unavailable; nothing was executed; retry later with the same Idempotency-Key")
		return nil, 0, true
	case !claimed && e.Fingerprint != fp:
		g.rec.IdempotencyResult(ResultMismatch)
		g.answerError(w, r, errcode.IdempotencyReused, "idempotency_key_reused",
			"this Idempotency-Key was used with another request body; nothing was executed; use a new key for a new batch")
		return nil, 0, true
	case !claimed && !e.Done:
		g.rec.IdempotencyResult(ResultConflict)
		g.answerError(w, r, errcode.IdempotencyBusy, "idempotency_key_busy",
			"a batch with this Idempotency-Key is still running; nothing was executed; retry when it has finished")
		return nil, 0, true
	case !claimed && e.Answer.NotStored:
		g.rec.IdempotencyResult(ResultConflict)
		g.answerError(w, r, errcode.IdempotencyNotStored, "idempotency_answer_not_stored",
			"the batch with this Idempotency-Key ran once (status "+strconv.Itoa(e.Answer.Status)+
				"), but its answer was larger than -idempotency-max-answer and was not stored; nothing was executed, "+
				"and it is never run again with this key")
		return nil, 0, true
	case !claimed:
		g.rec.IdempotencyResult(ResultReplayed)
		g.log.Info("batch replayed", "request_id", requestID(r), "idempotency_key", keys[0], "status", e.Answer.Status)
		h := w.Header()
		if e.Answer.ContentType != "" {
			h.Set("Content-Type", e.Answer.ContentType)
		}
		h.Set(HeaderReplayed, "true")
		w.WriteHeader(e.Answer.Status)
		if _, err := w.Write(e.Answer.Body); err != nil {
			g.log.Info("replayed answer not written", "request_id", requestID(r), "err", err)
		}
		return nil, 0, true
	}
	return g.finisher(r, key, keys[0], e), g.maxAnswer, false
}

// finisher returns the finish function of a claimed key.
func (g *Guard) finisher(r *http.Request, key, clientKey string, claim Entry) func(int, string, []byte) {
	var once sync.Once
	return func(status int, contentType string, body []byte) {
		once.Do(func() {
			// The store write must happen even if the client has gone: its retry is the reason to store.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), g.timeout)
			defer cancel()
			attrs := []any{"request_id", requestID(r), "idempotency_key", clientKey, "status", status}
			if status < 200 || status > 299 {
				if err := g.store.Release(ctx, key, claim); err != nil {
					// The claim stays until its lease ends: retries get 409 until then, never a second run.
					g.log.Error("idempotency key not released", append(attrs, "err", err)...)
				}
				return
			}
			a := Answer{Status: status, ContentType: contentType, Body: body}
			if body == nil || int64(len(body)) > g.maxAnswer {
				a = Answer{Status: status, NotStored: true}
			}
			stored, err := g.store.Complete(ctx, key, claim, a, g.ttl)
			switch {
			case err != nil:
				g.rec.IdempotencyResult(ResultError)
				g.log.Error("batch answer not stored", append(attrs, "err", err)...)
			case !stored:
				g.rec.IdempotencyResult(ResultError)
				g.log.Warn("batch answer not stored: the claim's lease ran out before the batch finished",
					append(attrs, "lease", g.lease.String())...)
			case a.NotStored:
				g.rec.IdempotencyResult(ResultNotStored)
				g.log.Info("batch answer not stored: over -idempotency-max-answer; the key is kept as run",
					append(attrs, "max_answer", g.maxAnswer)...)
			default:
				g.rec.IdempotencyResult(ResultStored)
			}
		})
	}
}

// answerError writes a batch-level ErrorResult in the shape of the server's other refusals.
func (g *Guard) answerError(w http.ResponseWriter, r *http.Request, code errcode.Code, reason, description string) {
	b := errcode.BatchBody(code, reason, description, nil)
	g.log.Info("batch refused", "request_id", requestID(r), "reason", reason, "status", code.Status())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code.Status())
	if _, err := w.Write(b); err != nil {
		g.log.Info("refusal not written", "request_id", requestID(r), "err", err)
	}
}

// validKey: 1–255 printable ASCII characters.
func validKey(k string) bool {
	if len(k) == 0 || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// scopedKey is the store key: the caller (sha256 of its Authorization, never stored in clear) and its key. The
// hash has a fixed length, so no (caller, key) pair can collide with another.
func scopedKey(authorization []string, key string) string {
	sum := sha256.Sum256([]byte(strings.Join(authorization, "\n")))
	return hex.EncodeToString(sum[:]) + ":" + key
}

func requestID(r *http.Request) string { return r.Header.Get("X-Request-Id") }

func nopFinish(int, string, []byte) {}

type nopRecorder struct{}

func (nopRecorder) IdempotencyResult(string) {}
