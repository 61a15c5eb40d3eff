package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// maxBody caps what the client reads from one response.
const maxBody = 16 << 20

// newHTTPClient returns the one client every phase shares: keep-alive, an idle pool sized for the widest fan-out,
// no proxy, no compression, no redirects, and a dialer that refuses anything but loopback.
func newHTTPClient(pool int) *http.Client {
	dialer := &net.Dialer{
		Timeout:   5 * time.Second,
		KeepAlive: 30 * time.Second,
		Control:   loopbackOnly,
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			MaxIdleConns:          pool,
			MaxIdleConnsPerHost:   pool,
			IdleConnTimeout:       90 * time.Second,
			DisableCompression:    true,
			ResponseHeaderTimeout: 60 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       90 * time.Second,
	}
}

// loopbackOnly is a net.Dialer Control hook: it sees the resolved address and refuses a non-loopback one.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to dial non-loopback address %s", address)
	}
	return nil
}

// checkLoopbackURL parses a -target style URL and refuses anything but http(s) on a loopback host.
func checkLoopbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q: no host", raw)
	}
	if err := requireLoopbackHost(u.Hostname()); err != nil {
		return nil, fmt.Errorf("%q: %w", raw, err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// post sends body to url and returns the status and the whole response body; the body is always read to the end
// and closed so that the connection goes back to the pool.
func post(ctx context.Context, c *http.Client, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return resp.StatusCode, b, err
	}
	if len(b) > maxBody {
		return resp.StatusCode, nil, fmt.Errorf("response over %d bytes", maxBody)
	}
	return resp.StatusCode, b, nil
}

// stepBody is the REGOS envelope of every answer the scenarios expect, decoded in one pass: the upstream's
// {"ok": true, "result": {"new_id": N}} and Demo/Echo's {"ok": true, "result": {"n": i}}. The client shares the
// machine's cores with batchd and the upstream, so its checks are kept cheap.
type stepBody struct {
	OK     *bool `json:"ok"`
	Result struct {
		NewID int64 `json:"new_id"`
		N     *int  `json:"n"`
	} `json:"result"`
}

func (s *stepBody) newID() (int64, error) {
	if s.OK == nil || !*s.OK {
		return 0, errors.New("ok is not true")
	}
	if s.Result.NewID < 1 {
		return 0, errors.New("no positive result.new_id")
	}
	return s.Result.NewID, nil
}

func (s *stepBody) echo(want int) error {
	if s.OK == nil || !*s.OK {
		return errors.New("ok is not true")
	}
	if s.Result.N == nil || *s.Result.N != want {
		return fmt.Errorf(`echo result is not {"n": %d}`, want)
	}
	return nil
}

// checkNewID verifies one upstream answer {"ok": true, "result": {"new_id": N}} and returns N.
func checkNewID(body []byte) (int64, error) {
	var s stepBody
	if err := json.Unmarshal(body, &s); err != nil {
		return 0, fmt.Errorf("unexpected answer: %w: %s", err, clip(body))
	}
	id, err := s.newID()
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, clip(body))
	}
	return id, nil
}

// checkEcho verifies a Demo/Echo answer {"ok": true, "result": {"n": want}}.
func checkEcho(body []byte, want int) error {
	var s stepBody
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("unexpected answer: %w: %s", err, clip(body))
	}
	if err := s.echo(want); err != nil {
		return fmt.Errorf("%w: %s", err, clip(body))
	}
	return nil
}

// batchAnswer is batchd's answer to a batch in the canonical form (CONTRACT.md §6), decoded in one pass.
type batchAnswer struct {
	Responses []struct {
		Key      string   `json:"key"`
		Status   int      `json:"status"`
		Response stepBody `json:"response"`
	} `json:"responses"`
}

// rawBatchAnswer keeps each step's body as it came, to quote it in an error message.
type rawBatchAnswer struct {
	Responses []struct {
		Response json.RawMessage `json:"response"`
	} `json:"responses"`
}

// checkBatch verifies batchd's answer to a batch built by a batchSpec: HTTP 200, one result per step in request
// order, each with status 200 and a body the spec accepts.
func checkBatch(spec batchSpec, status int, body []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("batch answered HTTP %d: %s", status, clip(body))
	}
	var a batchAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("unexpected batch answer: %w: %s", err, clip(body))
	}
	if len(a.Responses) != spec.steps {
		return fmt.Errorf("batch answer has %d results, want %d", len(a.Responses), spec.steps)
	}
	// quote returns step i's body as batchd sent it (parsed again, only on failure).
	quote := func(i int) string {
		var raw rawBatchAnswer
		if json.Unmarshal(body, &raw) != nil || i >= len(raw.Responses) {
			return clip(body)
		}
		return clip(raw.Responses[i].Response)
	}
	var prev int64
	for i := range a.Responses {
		r := &a.Responses[i]
		if want := stepKey(i); r.Key != want {
			return fmt.Errorf("result %d has key %q, want %q (request order)", i, r.Key, want)
		}
		if r.Status != http.StatusOK {
			return fmt.Errorf("step %s: status %d: %s", r.Key, r.Status, quote(i))
		}
		if spec.kind == batchEcho {
			if err := r.Response.echo(i); err != nil {
				return fmt.Errorf("step %s: %w: %s", r.Key, err, quote(i))
			}
			continue
		}
		id, err := r.Response.newID()
		if err != nil {
			return fmt.Errorf("step %s: %w: %s", r.Key, err, quote(i))
		}
		// A chained step starts after the step before it answered, so the upstream issued it a larger id.
		if spec.kind == batchChain && id <= prev {
			return fmt.Errorf("step %s: new_id %d not after the previous step's %d: the chain did not run in order", r.Key, id, prev)
		}
		prev = id
	}
	return nil
}

// clip shortens a body for an error message.
func clip(b []byte) string {
	const n = 300
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// errStatus reports a non-200 answer from a direct call.
func errStatus(status int, body []byte) error {
	return fmt.Errorf("HTTP %d: %s", status, clip(body))
}

// drainClose reads what is left of a body (so that the connection can be reused) and closes it.
func drainClose(resp *http.Response) error {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	return resp.Body.Close()
}
