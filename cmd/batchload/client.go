package main

import (
	"bytes"
	"context"
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
