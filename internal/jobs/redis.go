package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix namespaces the jobs' keys. The "{jobs}" hash tag puts them all in one Redis Cluster slot, so
// that every script's keys are on one node.
const DefaultRedisPrefix = "batchd:{jobs}:"

// Redis is the Store shared by every replica that uses the same Redis: jobs, their lines, progress and records
// live in Redis and survive any replica's restart, and batches are dispatched through one Redis Stream read by a
// consumer group, each replica a consumer.
//
// Layout, under the prefix: "job:<id>" a hash of the job's state and counters; "lines:<id>" a hash line → batch,
// each deleted once answered; "res:<id>" line → record; "meta:<id>" line → the counts the record added (so that a
// line run again replaces them); "tries:<id>" line → times taken over; "key:<scoped key>" → job id; "active" the set
// of jobs not ended; "queue" the stream. A committed job puts one feed entry in the stream; the replica that reads
// it adds the next Chunk lines' entries and, when lines remain, a new feed entry behind them, all in one script: a
// job's lines enter the queue as it drains, jobs submitted meanwhile get their turn between chunks, and cancelling
// a job drops its lines not yet fed at once.
//
// A replica keeps the entries it runs fresh (XCLAIM to itself every ClaimAfter/3); an entry idle for ClaimAfter
// belonged to a replica that stopped, and is taken over (XAUTOCLAIM) and run again. Every state change of a job is
// one Lua script, atomic: a batch's record, counts, acknowledgement and removal from the stream happen together or
// not at all. A job's keys expire ResultsTTL after its last progress.
type Redis struct {
	c          redis.UniversalClient
	p          string
	stream     string
	active     string
	consumer   string
	claimAfter time.Duration
	ttl        time.Duration
	maxResults int64
	chunk      int
	block      time.Duration

	mu      sync.Mutex
	running map[string]struct{} // stream entries this replica holds
	// reclaimed hands entries taken over from stopped replicas to Take.
	reclaimed chan redis.XMessage
	stop      context.CancelFunc
	loopDone  chan struct{}
}

// RedisConfig configures a Redis store. Zero values mean defaults.
type RedisConfig struct {
	Client redis.UniversalClient // required; the caller closes it after Close
	Prefix string                // default DefaultRedisPrefix
	// Consumer names this replica in the consumer group; default the host name and a random suffix.
	Consumer       string
	ClaimAfter     time.Duration // default DefaultClaimAfter
	ResultsTTL     time.Duration // default DefaultResultsTTL
	MaxResultBytes int64         // default DefaultMaxResultBytes
	Workers        int           // how many entries taken over may wait for a worker; default DefaultWorkers
	Chunk          int           // lines fed to the stream at a time; default 256
}

const group = "batchd"

// stagingTTL bounds how long the lines of a job whose upload never committed stay in Redis.
const stagingTTL = time.Hour

var _ Store = (*Redis)(nil)

// NewRedis returns a Redis store and starts its loop that keeps this replica's entries fresh and takes over the
// entries of stopped replicas; Close stops it.
func NewRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	s := &Redis{c: cfg.Client, p: cfg.Prefix, consumer: cfg.Consumer, claimAfter: cfg.ClaimAfter, ttl: cfg.ResultsTTL,
		maxResults: cfg.MaxResultBytes, chunk: cfg.Chunk, block: time.Second, running: map[string]struct{}{}}
	if s.p == "" {
		s.p = DefaultRedisPrefix
	}
	if s.consumer == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		s.consumer = host + "-" + hex.EncodeToString(b[:])
	}
	if s.claimAfter <= 0 {
		s.claimAfter = DefaultClaimAfter
	}
	if s.ttl <= 0 {
		s.ttl = DefaultResultsTTL
	}
	if s.maxResults <= 0 {
		s.maxResults = DefaultMaxResultBytes
	}
	if s.chunk <= 0 {
		s.chunk = 256
	}
	s.stream, s.active = s.p+"queue", s.p+"active"
	s.reclaimed = make(chan redis.XMessage, max(cfg.Workers, DefaultWorkers))
	if err := s.ensureGroup(ctx); err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.stop, s.loopDone = cancel, make(chan struct{})
	go s.claimLoop(lctx)
	return s, nil
}

// Consumer is this replica's name in the consumer group.
func (s *Redis) Consumer() string { return s.consumer }

func (s *Redis) ensureGroup(ctx context.Context) error {
	err := s.c.XGroupCreateMkStream(ctx, s.stream, group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("jobs: creating the consumer group: %w", err)
	}
	return nil
}

// jobKeys are the keys every job script gets, in this order (KEYS[1]…KEYS[7] in the scripts).
func (s *Redis) jobKeys(id string) []string {
	return []string{s.p + "job:" + id, s.p + "lines:" + id, s.p + "res:" + id, s.p + "meta:" + id, s.p + "tries:" + id,
		s.stream, s.active}
}

// luaPrelude holds what the job scripts share. K are the job's keys: 1 job, 2 lines, 3 res, 4 meta, 5 tries,
// 6 stream, 7 active; a script called for one job gets them as its KEYS, takeScript sets them for the job of the
// entry it read.
const luaPrelude = `
local K = KEYS
local function expire_job()
  local ttl = redis.call('HGET', K[1], 'ttl')
  for i = 1, 5 do redis.call('PEXPIRE', K[i], ttl) end
  local key = redis.call('HGET', K[1], 'key')
  if key and key ~= '' then redis.call('PEXPIRE', key, ttl) end
end
local function ack(entry)
  redis.call('XACK', K[6], 'batchd', entry)
  redis.call('XDEL', K[6], entry)
end
-- settle ends the job when every line is answered or skipped: done unless cancelled, out of the active set, its
-- keys expiring after the TTL. It returns 1 when the job turned done now, and the status.
local function settle(id, now)
  local v = redis.call('HMGET', K[1], 'st', 'tot', 'd', 'sk')
  local st = v[1]
  if tonumber(v[3]) + tonumber(v[4]) < tonumber(v[2]) then return {0, st} end
  local turned = 0
  if st ~= 'cancelled' and st ~= 'done' then
    redis.call('HSET', K[1], 'st', 'done', 'fi', now)
    st, turned = 'done', 1
  end
  redis.call('SREM', K[7], id)
  expire_job()
  return {turned, st}
end
-- feed handles a feed entry: the job's next chunk of lines enters the stream, and a new feed entry behind them
-- while lines remain; a cancelled job's lines not fed are skipped. It returns {lines skipped, turned done, status}.
local function feed(entry, id, chunk, now)
  ack(entry)
  local v = redis.call('HMGET', K[1], 'st', 'tot', 'fed')
  if not v[1] then return {0, 0, ''} end
  local st, tot, fed = v[1], tonumber(v[2]), tonumber(v[3])
  if st == 'cancelled' then
    local rest = tot - fed
    if rest > 0 then
      redis.call('HSET', K[1], 'fed', tot)
      redis.call('HINCRBY', K[1], 'sk', rest)
    end
    local s = settle(id, now)
    return {rest, s[1], s[2]}
  end
  local n = math.min(tonumber(chunk), tot - fed)
  for i = fed + 1, fed + n do redis.call('XADD', K[6], '*', 'j', id, 'l', i) end
  redis.call('HSET', K[1], 'fed', fed + n)
  if fed + n < tot then redis.call('XADD', K[6], '*', 'j', id, 'f', '1') end
  return {0, 0, st}
end
-- begin handles a line's entry: {"run", body, header, first start, give up}, or {"skip"} (the job was cancelled),
-- {"dup"} (the line was answered already), {"gone"} (the job expired).
local function begin(entry, id, line, reclaimed, maxruns, now)
  local sh = redis.call('HMGET', K[1], 'st', 'hd')
  local st = sh[1]
  if not st then ack(entry) return {'gone'} end
  if st == 'cancelled' then
    ack(entry)
    if redis.call('HEXISTS', K[2], line) == 0 then return {'dup'} end
    redis.call('HDEL', K[2], line)
    redis.call('HINCRBY', K[1], 'sk', 1)
    settle(id, now)
    return {'skip'}
  end
  local body = redis.call('HGET', K[2], line)
  if not body then ack(entry) return {'dup'} end
  local give = 0
  if reclaimed == '1' and redis.call('HINCRBY', K[5], line, 1) >= tonumber(maxruns) then give = 1 end
  local first = 0
  if st == 'queued' then
    redis.call('HSET', K[1], 'st', 'running', 'sa', now)
    first = 1
  end
  return {'run', body, sh[2], first, give}
end
`

// commitScript: KEYS 1–7, 8 the key mapping; ARGV id, fp, total, now, header, max result bytes, ttl, has key.
// Returns 1, or the id of the job the key names already.
var commitScript = redis.NewScript(luaPrelude + `
if ARGV[8] == '1' then
  local other = redis.call('GET', KEYS[8])
  if other then return other end
  redis.call('SET', KEYS[8], ARGV[1], 'PX', ARGV[7])
end
local key = ''
if ARGV[8] == '1' then key = KEYS[8] end
redis.call('HSET', KEYS[1], 'st', 'queued', 'fp', ARGV[2], 'tot', ARGV[3], 'cr', ARGV[4], 'hd', ARGV[5],
  'mx', ARGV[6], 'ttl', ARGV[7], 'key', key, 'fed', 0, 'd', 0, 'f', 0, 'sd', 0, 'sf', 0, 'sk', 0, 'rb', 0, 'ns', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('SADD', KEYS[7], ARGV[1])
redis.call('XADD', KEYS[6], '*', 'j', ARGV[1], 'f', '1')
return 1`)

// feedScript: ARGV entry, id, chunk, now. Returns feed's answer.
var feedScript = redis.NewScript(luaPrelude + `return feed(ARGV[1], ARGV[2], ARGV[3], ARGV[4])`)

// beginScript: ARGV entry, id, line, reclaimed, max runs, now. Returns begin's answer.
var beginScript = redis.NewScript(luaPrelude + `return begin(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])`)

// takeScript reads the queue without waiting and handles what it reads as feedScript and beginScript do, until it
// has a line to run: one round trip per batch while the queue is busy. KEYS the stream; ARGV consumer, key prefix,
// chunk, max runs, now. Returns {"run", entry, job, line, body, header, first start, give up, skipped}, or
// {"none", skipped} when it read nothing to run (Take then waits on the stream).
var takeScript = redis.NewScript(luaPrelude + `
local skipped = 0
for attempt = 1, 16 do
  local r = redis.call('XREADGROUP', 'GROUP', 'batchd', ARGV[1], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if not r then return {'none', skipped} end
  local entry, fv = r[1][2][1][1], r[1][2][1][2]
  local f = {}
  for i = 1, #fv, 2 do f[fv[i]] = fv[i + 1] end
  local id, p = f['j'], ARGV[2]
  K = {p .. 'job:' .. id, p .. 'lines:' .. id, p .. 'res:' .. id, p .. 'meta:' .. id, p .. 'tries:' .. id, KEYS[1],
    p .. 'active'}
  if f['f'] then
    skipped = skipped + feed(entry, id, ARGV[3], ARGV[5])[1]
  else
    local b = begin(entry, id, f['l'], '0', ARGV[4], ARGV[5])
    if b[1] == 'run' then return {'run', entry, id, f['l'], b[2], b[3], b[4], b[5], skipped} end
    if b[1] == 'skip' then skipped = skipped + 1 end
  end
end
return {'none', skipped}`)

// finishScript: ARGV entry, id, line, full record, summary, steps, failed steps, batch failed, now. Returns
// {turned done, status}. The counters are read and written in one call each; the keys' expiry is moved at most
// every tenth of the TTL.
var finishScript = redis.NewScript(luaPrelude + `
ack(ARGV[1])
local c = redis.call('HMGET', KEYS[1], 'st', 'tot', 'd', 'f', 'sd', 'sf', 'rb', 'ns', 'sk', 'mx', 'ttl', 'ex')
if not c[1] then return {0, ''} end
local d, f, sd, sf, rb, ns = tonumber(c[3]), tonumber(c[4]), tonumber(c[5]), tonumber(c[6]), tonumber(c[7]), tonumber(c[8])
local old = redis.call('HGET', KEYS[4], ARGV[3])
if old then
  local os, ofs, obf, on, ons = string.match(old, '^(%d+) (%d+) (%d) (%d+) (%d)$')
  d, sd, sf, f, rb, ns = d - 1, sd - tonumber(os), sf - tonumber(ofs), f - tonumber(obf), rb - tonumber(on), ns - tonumber(ons)
end
local rec, notStored = ARGV[4], 0
if rb + #rec > tonumber(c[10]) then rec, notStored = ARGV[5], 1 end
redis.call('HSET', KEYS[3], ARGV[3], rec)
redis.call('HSET', KEYS[4], ARGV[3], ARGV[6] .. ' ' .. ARGV[7] .. ' ' .. ARGV[8] .. ' ' .. #rec .. ' ' .. notStored)
d, sd, sf, f, rb, ns = d + 1, sd + tonumber(ARGV[6]), sf + tonumber(ARGV[7]), f + tonumber(ARGV[8]), rb + #rec, ns + notStored
redis.call('HSET', KEYS[1], 'd', d, 'f', f, 'sd', sd, 'sf', sf, 'rb', rb, 'ns', ns)
redis.call('HDEL', KEYS[2], ARGV[3])
redis.call('HDEL', KEYS[5], ARGV[3])
if d + tonumber(c[9]) >= tonumber(c[2]) then return settle(ARGV[2], ARGV[9]) end
local now, ttl = tonumber(ARGV[9]), tonumber(c[11])
if now - tonumber(c[12] or 0) > ttl / 10 then
  redis.call('HSET', KEYS[1], 'ex', now)
  expire_job()
end
return {0, c[1]}`)

// cancelScript: ARGV id, now. Returns {status, changed}.
var cancelScript = redis.NewScript(luaPrelude + `
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return {'', 0} end
if st == 'done' or st == 'cancelled' then return {st, 0} end
redis.call('HSET', KEYS[1], 'st', 'cancelled', 'fi', ARGV[2])
settle(ARGV[1], ARGV[2])
return {'cancelled', 1}`)

// releaseScript: KEYS the stream; ARGV entry, id, line. The entry goes back to the end of the queue, in one step.
var releaseScript = redis.NewScript(`
redis.call('XACK', KEYS[1], 'batchd', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[1], '*', 'j', ARGV[2], 'l', ARGV[3])
return 1`)

func nowMS() int64 { return time.Now().UnixMilli() }

// Stage implements Store.
func (s *Redis) Stage(_ context.Context, spec Spec) (Stager, error) {
	hd, err := json.Marshal(spec.Header)
	if err != nil {
		return nil, err
	}
	return &redisStager{s: s, id: newID(), key: spec.Key, header: string(hd)}, nil
}

// redisStager writes lines to the job's lines hash in pipelined chunks as they come.
type redisStager struct {
	s      *Redis
	id     string
	key    string
	header string
	n      int64
	buf    []any // HSET arguments not sent yet: line, body, …
	bytes  int
	done   bool
}

const stageFlushBytes = 1 << 20

func (st *redisStager) Add(ctx context.Context, line []byte) error {
	st.n++
	st.buf = append(st.buf, st.n, string(line))
	st.bytes += len(line)
	if st.bytes >= stageFlushBytes || len(st.buf) >= 2*512 {
		return st.flush(ctx)
	}
	return nil
}

func (st *redisStager) flush(ctx context.Context) error {
	if len(st.buf) == 0 {
		return nil
	}
	key := st.s.p + "lines:" + st.id
	pipe := st.s.c.Pipeline()
	pipe.HSet(ctx, key, st.buf...)
	pipe.PExpire(ctx, key, stagingTTL)
	_, err := pipe.Exec(ctx)
	st.buf, st.bytes = st.buf[:0], 0
	if err != nil {
		return fmt.Errorf("jobs: staging lines in redis: %w", err)
	}
	return nil
}

func (st *redisStager) Commit(ctx context.Context, fp Fingerprint) (Job, bool, error) {
	if err := st.flush(ctx); err != nil {
		st.Abort()
		return Job{}, false, err
	}
	s := st.s
	keys := append(s.jobKeys(st.id), s.p+"key:"+st.key)
	hasKey := "0"
	if st.key != "" {
		hasKey = "1"
	}
	for attempt := 0; ; attempt++ {
		now := nowMS()
		res, err := commitScript.Run(ctx, s.c, keys, st.id, hex.EncodeToString(fp[:]), st.n, now, st.header,
			s.maxResults, s.ttl.Milliseconds(), hasKey).Result()
		if err != nil {
			st.Abort()
			return Job{}, false, fmt.Errorf("jobs: committing a job in redis: %w", err)
		}
		other, ok := res.(string)
		if !ok {
			// The job as committed: a worker may have started it already.
			st.done = true
			return Job{ID: st.id, Status: StatusQueued, Total: st.n, MaxResultBytes: s.maxResults,
				Created: time.UnixMilli(now)}, false, nil
		}
		j, ofp, found, err := s.job(ctx, other)
		if err == nil && !found && attempt == 0 {
			// The key outlived its job: it names nothing, and is this job's now.
			s.c.Del(ctx, keys[7])
			continue
		}
		st.Abort()
		switch {
		case err != nil:
			return Job{}, false, err
		case !found:
			return Job{}, false, ErrNotFound
		case ofp != fp:
			return Job{}, true, ErrKeyReused
		}
		return j, true, nil
	}
}

func (st *redisStager) Abort() {
	if st.done {
		return
	}
	st.done = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st.s.c.Del(ctx, st.s.p+"lines:"+st.id) // else it expires after stagingTTL
}

// jobFields are the job hash's fields Get reads, in the order parseJob expects.
var jobFields = []string{"st", "tot", "d", "f", "sk", "sd", "sf", "rb", "ns", "mx", "cr", "sa", "fi", "fp"}

// job reads a job's state and fingerprint.
func (s *Redis) job(ctx context.Context, id string) (Job, Fingerprint, bool, error) {
	v, err := s.c.HMGet(ctx, s.p+"job:"+id, jobFields...).Result()
	if err != nil {
		return Job{}, Fingerprint{}, false, fmt.Errorf("jobs: reading job %s from redis: %w", id, err)
	}
	j, fp, ok := parseJob(id, v)
	return j, fp, ok, nil
}

func parseJob(id string, v []any) (Job, Fingerprint, bool) {
	var fp Fingerprint
	str := func(i int) string { s, _ := v[i].(string); return s }
	if str(0) == "" {
		return Job{}, fp, false
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(str(i), 10, 64); return n }
	at := func(i int) time.Time {
		if n := num(i); n > 0 {
			return time.UnixMilli(n)
		}
		return time.Time{}
	}
	j := Job{ID: id, Status: Status(str(0)), Total: num(1), Done: num(2), Failed: num(3), Skipped: num(4),
		StepsDone: num(5), StepsFailed: num(6), ResultBytes: num(7), NotStored: num(8), MaxResultBytes: num(9),
		Created: at(10), Started: at(11), Finished: at(12)}
	_, _ = hex.Decode(fp[:], []byte(str(13)))
	return j, fp, true
}

// Find implements Store.
func (s *Redis) Find(ctx context.Context, key string) (Job, Fingerprint, bool, error) {
	id, err := s.c.Get(ctx, s.p+"key:"+key).Result()
	if errors.Is(err, redis.Nil) {
		return Job{}, Fingerprint{}, false, nil
	}
	if err != nil {
		return Job{}, Fingerprint{}, false, fmt.Errorf("jobs: reading an idempotency key from redis: %w", err)
	}
	return s.job(ctx, id)
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, id string) (Job, error) {
	j, _, ok, err := s.job(ctx, id)
	if err == nil && !ok {
		err = ErrNotFound
	}
	return j, err
}

// Cancel implements Store.
func (s *Redis) Cancel(ctx context.Context, id string) (Job, bool, error) {
	v, err := cancelScript.Run(ctx, s.c, s.jobKeys(id), id, nowMS()).Slice()
	if err != nil {
		return Job{}, false, fmt.Errorf("jobs: cancelling job %s in redis: %w", id, err)
	}
	if v[0] == "" {
		return Job{}, false, ErrNotFound
	}
	j, err := s.Get(ctx, id)
	return j, v[1] == int64(1), err
}

// redisTask is a taken entry.
type redisTask struct {
	entry string
}

// Take implements Store.
func (s *Redis) Take(ctx context.Context) (*Task, int, error) {
	skipped := 0
	for {
		var msg redis.XMessage
		reclaimed := false
		select {
		case msg = <-s.reclaimed:
			reclaimed = true
		default:
			if ctx.Err() != nil {
				return nil, skipped, nil
			}
			t, n, err := s.take(ctx)
			skipped += n
			if err != nil || t != nil {
				return t, skipped, err
			}
			if skipped > 0 {
				return nil, skipped, nil
			}
			// Nothing to run now: wait on the stream.
			res, err := s.c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: s.consumer,
				Streams: []string{s.stream, ">"}, Count: 1, Block: s.block}).Result()
			switch {
			case errors.Is(err, redis.Nil):
				if skipped > 0 {
					return nil, skipped, nil
				}
				continue
			case err != nil && ctx.Err() != nil:
				return nil, skipped, nil
			case err != nil && strings.HasPrefix(err.Error(), "NOGROUP"):
				// Redis lost the stream (a restart without persistence): make it again.
				if gerr := s.ensureGroup(ctx); gerr != nil {
					return nil, skipped, gerr
				}
				continue
			case err != nil:
				return nil, skipped, fmt.Errorf("jobs: reading the queue: %w", err)
			}
			if len(res) == 0 || len(res[0].Messages) == 0 {
				continue
			}
			msg = res[0].Messages[0]
			s.hold(msg.ID)
		}
		t, n, err := s.begin(ctx, msg, reclaimed)
		skipped += n
		if err != nil || t != nil {
			return t, skipped, err
		}
	}
}

// take reads and handles entries without waiting (takeScript) until it has a line to run; nil when there is none.
func (s *Redis) take(ctx context.Context) (*Task, int, error) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	v, err := takeScript.Run(sctx, s.c, []string{s.stream}, s.consumer, s.p, s.chunk, MaxRuns, nowMS()).Slice()
	switch {
	case err != nil && strings.HasPrefix(err.Error(), "NOGROUP"):
		return nil, 0, nil // the blocking read that follows makes the group again
	case err != nil:
		return nil, 0, fmt.Errorf("jobs: taking a batch: %w", err)
	case v[0] != "run":
		n, _ := v[1].(int64)
		return nil, int(n), nil
	}
	entry, _ := v[1].(string)
	s.hold(entry)
	id, _ := v[2].(string)
	line, _ := v[3].(string)
	n, _ := v[8].(int64)
	t := s.task(id, line, entry, false, v[4:8])
	if ctx.Err() != nil { // stopping: hand it back rather than start it
		return nil, int(n), s.Release(sctx, t)
	}
	return t, int(n), nil
}

// task builds the task of a line's entry from begin's {body, header, first start, give up}.
func (s *Redis) task(id, line, entry string, reclaimed bool, v []any) *Task {
	t := &Task{Batch: Batch{Job: id}, Reclaimed: reclaimed, handle: &redisTask{entry: entry}}
	t.Line, _ = strconv.ParseInt(line, 10, 64)
	body, _ := v[0].(string)
	t.Body = []byte(body)
	if hd, _ := v[1].(string); hd != "" && hd != "null" {
		var h http.Header
		if err := json.Unmarshal([]byte(hd), &h); err == nil {
			t.Header = h
		}
	}
	t.FirstStart, t.GiveUp = v[2] == int64(1), v[3] == int64(1)
	return t
}

// begin handles one entry: a feed entry feeds its job's next lines; a line's entry becomes a task unless its job
// was cancelled (skipped) or it was answered already.
func (s *Redis) begin(ctx context.Context, msg redis.XMessage, reclaimed bool) (*Task, int, error) {
	id, _ := msg.Values["j"].(string)
	// A script's effects must not depend on who stops waiting: run it to its end.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, ok := msg.Values["f"]; ok {
		defer s.drop(msg.ID)
		v, err := feedScript.Run(sctx, s.c, s.jobKeys(id), msg.ID, id, s.chunk, nowMS()).Slice()
		if err != nil {
			return nil, 0, fmt.Errorf("jobs: feeding job %s: %w", id, err)
		}
		n, _ := v[0].(int64)
		return nil, int(n), nil
	}
	line, _ := msg.Values["l"].(string)
	if ctx.Err() != nil { // stopping: hand it back rather than start it
		t := &Task{Batch: Batch{Job: id}, handle: &redisTask{entry: msg.ID}}
		t.Line, _ = strconv.ParseInt(line, 10, 64)
		return nil, 0, s.Release(sctx, t)
	}
	rc := "0"
	if reclaimed {
		rc = "1"
	}
	v, err := beginScript.Run(sctx, s.c, s.jobKeys(id), msg.ID, id, line, rc, MaxRuns, nowMS()).Slice()
	if err != nil {
		s.drop(msg.ID) // still pending: taken over after ClaimAfter
		return nil, 0, fmt.Errorf("jobs: starting line %s of job %s: %w", line, id, err)
	}
	switch v[0] {
	case "run":
	case "skip":
		s.drop(msg.ID)
		return nil, 1, nil
	default:
		s.drop(msg.ID)
		return nil, 0, nil
	}
	return s.task(id, line, msg.ID, reclaimed, v[1:5]), 0, nil
}

// hold and drop track the entries this replica holds, which the claim loop keeps fresh.
func (s *Redis) hold(entry string) {
	s.mu.Lock()
	s.running[entry] = struct{}{}
	s.mu.Unlock()
}

func (s *Redis) drop(entry string) {
	s.mu.Lock()
	delete(s.running, entry)
	s.mu.Unlock()
}

// Finish implements Store.
func (s *Redis) Finish(ctx context.Context, t *Task, r Record) (Finished, error) {
	entry := t.handle.(*redisTask).entry
	bf := 0
	if r.BatchFailed {
		bf = 1
	}
	v, err := finishScript.Run(ctx, s.c, s.jobKeys(t.Job), entry, t.Job, r.Line, r.Full, r.Summary, r.Steps, r.Failed,
		bf, nowMS()).Slice()
	if err != nil {
		return Finished{}, fmt.Errorf("jobs: storing line %d of job %s: %w", r.Line, t.Job, err)
	}
	s.drop(entry)
	st, _ := v[1].(string)
	return Finished{Ended: v[0] == int64(1), Final: Status(st)}, nil
}

// Release implements Store.
func (s *Redis) Release(ctx context.Context, t *Task) error {
	entry := t.handle.(*redisTask).entry
	if err := releaseScript.Run(ctx, s.c, []string{s.stream}, entry, t.Job, t.Line).Err(); err != nil {
		return fmt.Errorf("jobs: handing back line %d of job %s: %w", t.Line, t.Job, err)
	}
	s.drop(entry)
	return nil
}

// Results implements Store.
func (s *Redis) Results(ctx context.Context, id string, from int64, n int) ([][]byte, Job, error) {
	fields := make([]string, n)
	for i := range fields {
		fields[i] = strconv.FormatInt(from+int64(i), 10)
	}
	pipe := s.c.Pipeline()
	recs := pipe.HMGet(ctx, s.p+"res:"+id, fields...)
	state := pipe.HMGet(ctx, s.p+"job:"+id, jobFields...)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, Job{}, fmt.Errorf("jobs: reading results of job %s: %w", id, err)
	}
	j, _, ok := parseJob(id, state.Val())
	if !ok {
		return nil, Job{}, ErrNotFound
	}
	vals := recs.Val()
	if keep := j.Total - from + 1; keep < int64(len(vals)) {
		vals = vals[:max(keep, 0)]
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		if r, ok := v.(string); ok {
			out[i] = []byte(r)
		}
	}
	return out, j, nil
}

// maxStatsJobs bounds the active jobs read for one Stats.
const maxStatsJobs = 1000

// Stats implements Store: the jobs in the active set (at most maxStatsJobs of them).
func (s *Redis) Stats(ctx context.Context) (Stats, error) {
	ids, _, err := s.c.SScan(ctx, s.active, 0, "", maxStatsJobs).Result()
	if err != nil {
		return Stats{}, fmt.Errorf("jobs: reading active jobs: %w", err)
	}
	pipe := s.c.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, s.p+"job:"+id, jobFields...)
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return Stats{}, fmt.Errorf("jobs: reading active jobs: %w", err)
		}
	}
	var st Stats
	now := time.Now()
	for i, id := range ids {
		j, _, ok := parseJob(id, cmds[i].Val())
		if !ok {
			s.c.SRem(ctx, s.active, id) // expired
			continue
		}
		st.add(&j, now)
	}
	return st, nil
}

// claimLoop keeps this replica's entries fresh and takes over entries idle for ClaimAfter, until Close.
func (s *Redis) claimLoop(ctx context.Context) {
	defer close(s.loopDone)
	tick := time.NewTicker(max(s.claimAfter/3, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		held := make([]string, 0, len(s.running))
		for e := range s.running {
			held = append(held, e)
		}
		s.mu.Unlock()
		if len(held) > 0 {
			// Claiming an entry for itself resets its idle time: no other replica takes it over.
			_ = s.c.XClaimJustID(ctx, &redis.XClaimArgs{Stream: s.stream, Group: group, Consumer: s.consumer,
				Messages: held}).Err()
		}
		free := cap(s.reclaimed) - len(s.reclaimed)
		if free <= 0 {
			continue
		}
		msgs, _, err := s.c.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: s.stream, Group: group,
			Consumer: s.consumer, MinIdle: s.claimAfter, Start: "0-0", Count: int64(free)}).Result()
		if err != nil {
			continue
		}
		for _, m := range msgs {
			s.hold(m.ID)
			s.reclaimed <- m // this loop is the only sender, and there was room
		}
	}
}

// Close stops the claim loop. Entries this replica holds stay pending: another replica takes them over after
// ClaimAfter.
func (s *Redis) Close() error {
	s.stop()
	<-s.loopDone
	return nil
}
