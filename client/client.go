package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxAnswer is Config.MaxAnswer's default: 256 MiB, room for the largest answer a default batchd builds
// (its -max-batch-bytes, 64 MiB, bounds what a batch holds).
const DefaultMaxAnswer = 256 << 20

// maxErrorBody is the most bytes of a refusal read; an ErrorResult listing every problem of a 50-step batch is
// far smaller.
const maxErrorBody = 1 << 20

// Config is a Client's wiring. Zero values mean defaults.
type Config struct {
	// HTTPClient makes the requests; nil: a client of its own over a clone of net/http's default transport, with
	// no overall timeout (bound each call by its context).
	HTTPClient *http.Client
	// Header is sent with every request, e.g. Authorization, which batchd forwards to every step of a batch.
	Header http.Header
	// MaxAnswer is the most bytes read for one answer: a batch's whole answer, a plan, or one line of job results.
	// Default DefaultMaxAnswer.
	MaxAnswer int64
}

// Client talks to one batchd. Build it with New.
type Client struct {
	base      *url.URL
	hc        *http.Client
	header    http.Header
	maxAnswer int64
}

// New returns a client of the batchd at baseURL (e.g. "http://localhost:8080"; a path prefix is kept, for a
// batchd behind a proxy that serves it under one).
func New(baseURL string, cfg Config) (*Client, error) {
	u, err := url.Parse(baseURL)
	switch {
	case err != nil:
		return nil, fmt.Errorf("client: base URL %q: %w", baseURL, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("client: base URL %q must start with http:// or https:// (e.g. http://localhost:8080)", baseURL)
	case u.Host == "":
		return nil, fmt.Errorf("client: base URL %q names no host (e.g. http://localhost:8080)", baseURL)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, fmt.Errorf("client: base URL %q may hold no query, fragment or user info; send credentials in Config.Header", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if cfg.MaxAnswer <= 0 {
		cfg.MaxAnswer = DefaultMaxAnswer
	}
	return &Client{base: u, hc: hc, header: cfg.Header.Clone(), maxAnswer: cfg.MaxAnswer}, nil
}

// BaseURL returns the URL the client was built with, without a trailing slash.
func (c *Client) BaseURL() string { return c.base.String() }

// RequestOption adds to one request.
type RequestOption func(http.Header)

// IdempotencyKey sends Idempotency-Key: a batch retried with the same key and body gets the first run's answer
// instead of running again; a job submitted again with the same key is the same job.
func IdempotencyKey(key string) RequestOption {
	return func(h http.Header) { h.Set("Idempotency-Key", key) }
}

// Header sends a header with this request only (e.g. X-Request-Id), over Config.Header's value of that name.
func Header(name, value string) RequestOption {
	return func(h http.Header) { h.Set(name, value) }
}

// Error is an answer that is not a 2xx: a batch refused before anything ran (400 with Details, 413, 415, 422,
// 429, 503), an unknown job (404), or a proxy's error page.
type Error struct {
	Status int // HTTP status
	// Code is the ErrorResult's result.error (4000: the batch was refused, see Details); 0 when the body was not
	// an ErrorResult.
	Code        int
	Description string
	Details     []Problem
	// RetryAfter is the Retry-After the answer carried (429, 503); 0 without one.
	RetryAfter time.Duration
	RequestID  string // the answer's X-Request-Id
	// Body is the answer's body when it was not an ErrorResult (at most 1 MiB), for a message.
	Body []byte
}

// Problem is one reason a batch or a job was refused.
type Problem struct {
	Key     string `json:"key,omitempty"`    // the step's key, or "#i" for the step at index i
	Line    int    `json:"line,omitempty"`   // for a job, the NDJSON line it is on, from 1
	Reason  string `json:"reason,omitempty"` // a stable word, e.g. invalid_path, unknown_ref
	Problem string `json:"problem"`          // what is wrong, for a human
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "batchd answered %d", e.Status)
	if e.Code != 0 {
		fmt.Fprintf(&b, " (error %d)", e.Code)
	}
	switch {
	case e.Description != "":
		b.WriteString(": " + e.Description)
	case len(e.Body) > 0:
		b.WriteString(": " + strings.TrimSpace(string(e.Body[:min(len(e.Body), 200)])))
	}
	return b.String()
}

// ErrIncomplete is an answer that stopped before its end: batchd or the connection went away mid-answer. What
// did arrive is returned with it.
var ErrIncomplete = errors.New("the answer ended before its last line: batchd or the connection stopped mid-answer")

// endpoint is the URL of path under the base URL; path starts with "/" and is escaped already (a job id is one
// escaped segment).
func (c *Client) endpoint(path string, query url.Values) (string, error) {
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return "", err
	}
	u.Path = p
	u.RawQuery = query.Encode()
	return u.String(), nil
}

// do sends a request and returns its response when it is a 2xx; any other status is an *Error (its body read and
// closed).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string,
	opts []RequestOption) (*http.Response, error) {
	target, err := c.endpoint(path, query)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	for name, vs := range c.header {
		req.Header[name] = append([]string(nil), vs...)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for _, o := range opts {
		o(req.Header)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readError(resp)
}

// readError reads a refusal's body into an *Error.
func readError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	var er struct {
		OK     *bool `json:"ok"`
		Result struct {
			Error       int       `json:"error"`
			Description string    `json:"description"`
			Details     []Problem `json:"details"`
		} `json:"result"`
	}
	if json.Unmarshal(body, &er) == nil && er.OK != nil && !*er.OK && er.Result.Error != 0 {
		e.Code, e.Description, e.Details = er.Result.Error, er.Result.Description, er.Result.Details
	} else {
		e.Body = body
	}
	return e
}

// readAll reads a whole answer of at most c.maxAnswer bytes.
func (c *Client) readAll(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, c.maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("client: reading the answer: %w", err)
	}
	if int64(len(b)) > c.maxAnswer {
		return nil, fmt.Errorf("client: the answer is over %d bytes (Config.MaxAnswer)", c.maxAnswer)
	}
	return b, nil
}

// mediaType is a Content-Type's media type, lower case, without parameters.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// marshal writes v as compact JSON without HTML escaping (placeholders and paths stay readable).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("client: encoding the batch: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
