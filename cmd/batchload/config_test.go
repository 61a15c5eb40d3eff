package main

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseConfig(t *testing.T) {
	cfg, err := parseConfig(nil, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, []string{"a50", "b50", "c10", "d10", "demo10"}, cfg.scenarios)
	assert.Equal(t, 200, cfg.latencyCount(false))
	assert.Equal(t, 100, cfg.latencyCount(true))
	assert.Equal(t, 20, cfg.warmupFor(200))
	assert.Equal(t, 1, cfg.warmupFor(5))
	assert.Equal(t, time.Second, cfg.warmWindow())
	assert.True(t, cfg.upstreamProcess, "the upstream is another process by default, as a real one is")

	cfg, err = parseConfig([]string{"-scenario", "d10, a50,a50", "-requests", "5", "-warmup", "0"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, []string{"a50", "d10"}, cfg.scenarios, "canonical order, once each")
	assert.Equal(t, 5, cfg.latencyCount(true))
	assert.Equal(t, 0, cfg.warmupFor(5))

	cfg, err = parseConfig([]string{"-scenario", "job,a50", "-job-rss-steps", "100, 1000", "-jobs-redis", "redis://127.0.0.1:6379/0"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, []string{"a50", "job"}, cfg.scenarios, "job runs only when named, last")
	assert.Equal(t, []int{100, 1000}, cfg.jobRSSSteps)
	assert.Equal(t, []string{"-jobs-redis", "redis://127.0.0.1:6379/0"}, cfg.jobArgs())

	cfg, err = parseConfig([]string{"-upstream-process=false"}, io.Discard)
	require.NoError(t, err)
	assert.False(t, cfg.upstreamProcess)

	cfg, err = parseConfig([]string{"-target", "http://localhost:8080/", "-upstream-listen", "127.0.0.1:9999"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "http://localhost:8080", cfg.target)
}

func TestParseConfigRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown scenario", []string{"-scenario", "z9"}, "unknown"},
		{"non-loopback target", []string{"-target", "http://10.0.0.1:8080", "-upstream-listen", "127.0.0.1:9999"}, "not a loopback"},
		{"public name target", []string{"-target", "http://example.com", "-upstream-listen", "127.0.0.1:9999"}, "not a loopback"},
		{"non-loopback demo target", []string{"-demo-target", "http://192.168.1.2:8080"}, "not a loopback"},
		{"target scheme", []string{"-target", "ftp://127.0.0.1", "-upstream-listen", "127.0.0.1:9999"}, "scheme"},
		{"target without known upstream", []string{"-target", "http://127.0.0.1:8080"}, "-upstream-listen"},
		{"non-loopback upstream", []string{"-upstream-listen", "0.0.0.0:9999"}, "not a loopback"},
		{"duration over the cap", []string{"-duration", "2m"}, "-duration"},
		{"requests over the cap", []string{"-requests", "1000000"}, "-requests"},
		{"concurrency zero", []string{"-concurrency", "0"}, "-concurrency"},
		{"format", []string{"-format", "html"}, "-format"},
		{"max-time", []string{"-max-time", "2h"}, "-max-time"},
		{"stray argument", []string{"a50"}, "unexpected"},
		{"job rss steps", []string{"-job-rss-steps", "10,x"}, "-job-rss-steps"},
		{"job lines", []string{"-job-lines", "0"}, "-job-lines"},
		{"jobs redis off loopback", []string{"-jobs-redis", "redis://10.0.0.1:6379/0"}, "-jobs-redis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, io.Discard)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

func TestCommandLine(t *testing.T) {
	assert.Equal(t, "bin/batchload -scenario all -format markdown", commandLine([]string{"bin/batchload", "-scenario", "all", "-format", "markdown"}))
	assert.Equal(t, "go run ./cmd/batchload -scenario 'a50 b50'", commandLine([]string{"/tmp/go-build123/b001/exe/batchload", "-scenario", "a50 b50"}))
	assert.Equal(t, `x '' 'it'\''s'`, commandLine([]string{"x", "", "it's"}))
}
