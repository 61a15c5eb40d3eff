package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/batchd/batchd/internal/jobs"
	"github.com/batchd/batchd/transport"
)

// jobsConfig is the configuration of jobs (docs/jobs.md).
type jobsConfig struct {
	redisURL       string // empty: jobs in memory, in this process
	workers        int
	claimAfter     time.Duration
	maxBatches     int
	resultsTTL     time.Duration
	maxResultBytes byteSize
	maxBody        byteSize
}

func defaultJobsConfig() jobsConfig {
	return jobsConfig{workers: jobs.DefaultWorkers, claimAfter: jobs.DefaultClaimAfter,
		maxBatches: transport.DefaultJobMaxBatches, resultsTTL: jobs.DefaultResultsTTL,
		maxResultBytes: jobs.DefaultMaxResultBytes, maxBody: transport.DefaultJobMaxBody}
}

// bindJobs registers the jobs flags with bind (parseConfig's: a flag with its environment fallback).
func bindJobs(c *jobsConfig, bind func(v flag.Value, name, env, usage string)) {
	bind((*redactedURL)(&c.redisURL), "jobs-redis", "BATCHD_JOBS_REDIS", "Redis that holds jobs, shared by every replica, e.g. redis://127.0.0.1:6379/0; empty: jobs run in memory in this process and do not survive it")
	bind((*intValue)(&c.workers), "job-workers", "BATCHD_JOB_WORKERS", "batches of jobs this replica runs at once (one at a time while interactive batches are served), e.g. 4")
	bind((*durationValue)(&c.claimAfter), "job-claim-after", "BATCHD_JOB_CLAIM_AFTER", "with -jobs-redis: a batch whose replica has not been heard of for this long is taken over by another and run again, e.g. 30s")
	bind((*intValue)(&c.maxBatches), "job-max-batches", "BATCHD_JOB_MAX_BATCHES", "most lines (batches) one job may hold, e.g. 1000000")
	bind((*durationValue)(&c.resultsTTL), "job-results-ttl", "BATCHD_JOB_RESULTS_TTL", "how long a job and its results are kept after its last progress, e.g. 24h")
	bind(&c.maxResultBytes, "job-max-result-bytes", "BATCHD_JOB_MAX_RESULT_BYTES", "most bytes of answers stored per job, e.g. 256MiB; past it a line keeps a one-line summary (steps, failed) instead of its answer")
	bind(&c.maxBody, "job-max-body", "BATCHD_JOB_MAX_BODY", "largest job request body, e.g. 1GiB; larger gets 413")
}

func (c jobsConfig) validate() []error {
	var errs []error
	check := func(ok bool, format string, a ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, a...))
		}
	}
	check(c.workers >= 1 && c.workers <= 1024, "-job-workers must be 1 to 1024")
	check(c.claimAfter >= time.Second, "-job-claim-after must be at least 1s")
	check(c.maxBatches >= 1, "-job-max-batches must be at least 1")
	check(c.resultsTTL >= time.Minute, "-job-results-ttl must be at least 1m")
	check(c.maxResultBytes >= 1<<10, "-job-max-result-bytes must be at least 1KiB")
	check(c.maxBody >= 1<<10, "-job-max-body must be at least 1KiB")
	if c.redisURL != "" {
		_, err := redis.ParseURL(c.redisURL)
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may hold a password
		}
		check(err == nil, "-jobs-redis must be a redis://, rediss:// or unix:// URL: %v", err)
	}
	return errs
}

// jobEngine builds the job engine: on Redis when -jobs-redis is set (Redis must answer a PING within 5s, else the
// start fails), else in memory. closeStore closes the store and its Redis client, after the engine's shutdown.
func jobEngine(ctx context.Context, c jobsConfig, rec jobs.Recorder, log *slog.Logger) (e *jobs.Engine, closeStore func(), err error) {
	var store jobs.Store
	closeStore, where := func() {}, "memory"
	if c.redisURL == "" {
		m := jobs.NewMemory(jobs.MemoryConfig{ResultsTTL: c.resultsTTL, MaxResultBytes: int64(c.maxResultBytes)})
		store, closeStore = m, func() { _ = m.Close() }
	} else {
		opt, err := redis.ParseURL(c.redisURL) // validated by parseConfig
		if err != nil {
			return nil, nil, &usageError{err}
		}
		where = opt.Addr
		// Each worker blocks a connection while it waits for a batch; the rest serve the other calls.
		opt.PoolSize = max(opt.PoolSize, c.workers+10)
		client := redis.NewClient(opt)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := client.Ping(pctx).Err(); err != nil {
			_ = client.Close()
			return nil, nil, fmt.Errorf("redis at %s (-jobs-redis) unreachable: %w", where, err)
		}
		rs, err := jobs.NewRedis(pctx, jobs.RedisConfig{Client: client, ClaimAfter: c.claimAfter,
			ResultsTTL: c.resultsTTL, MaxResultBytes: int64(c.maxResultBytes), Workers: c.workers})
		if err != nil {
			_ = client.Close()
			return nil, nil, err
		}
		store, closeStore = rs, func() { _ = rs.Close(); _ = client.Close() }
		where += " as " + rs.Consumer()
	}
	log.Info("jobs", "store", where, "workers", c.workers, "results_ttl", c.resultsTTL.String(),
		"max_result_bytes", c.maxResultBytes.String())
	return jobs.New(jobs.Config{Store: store, Workers: c.workers, Recorder: rec, Logger: log}), closeStore, nil
}
