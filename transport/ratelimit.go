package transport

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/batchd/batchd/internal/errcode"
	"github.com/batchd/batchd/internal/ratelimit"
	"github.com/batchd/batchd/planner"
)

// RateLimiter charges a caller for a batch; *ratelimit.Limiter implements it.
type RateLimiter interface {
	// Allow charges caller cost steps if it has them.
	Allow(caller string, cost int) ratelimit.Decision
}

var _ RateLimiter = (*ratelimit.Limiter)(nil)

// rateLimit charges the batch's caller for its steps, after planning (when the cost is known) and before anything
// runs. It answers 429 and returns true when the batch may not run.
//
// The caller is the client's address (the connection's, or the last untrusted X-Forwarded-For hop behind
// Config.TrustedProxies), or with RateLimitKey "authorization" a digest of its Authorization when it has one.
func (s *Server) rateLimit(c echo.Context, start time.Time, plan *planner.Plan) (bool, error) {
	lim := s.cfg.RateLimiter
	if lim == nil {
		return false, nil
	}
	cost := len(plan.Steps)
	d := lim.Allow(s.caller(c), cost)
	switch {
	case d.Allowed:
		return false, nil
	case d.OverBurst:
		return true, s.refuse(c, start, ReasonRateLimited, errcode.RateLimited, "batch of "+strconv.Itoa(cost)+
			" steps is over the rate limit's burst of "+strconv.Itoa(d.Burst)+" steps: it can never run as one batch; split it", nil)
	}
	secs := d.RetryAfterSeconds()
	c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	return true, s.refuse(c, start, ReasonRateLimited, errcode.RateLimited, "rate limit exceeded: this batch costs "+
		strconv.Itoa(cost)+" steps; retry after "+strconv.Itoa(secs)+"s", nil)
}
