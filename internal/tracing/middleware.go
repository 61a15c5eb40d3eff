package tracing

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Middleware returns echo middleware that wraps each request in a server span: the batch span when mounted on
// POST /v1/batch (transport.Config.BatchMiddleware). The span is a child of the W3C trace context in the request's
// traceparent and tracestate headers (a root when there is none or it is malformed), is named after the method and
// route ("POST /v1/batch"), and carries http.request.method, url.path, http.response.status_code and
// batchd.request_id (the X-Request-Id the handler answered with, generated when the client sent none). A 5xx answer
// or a panic sets the span status to Error; a refused batch (4xx) is the client's error, not the server's, and
// leaves it unset.
//
// The span goes into the request's context, so every step span started under it (Invoker) is its child.
// An error from the handler is passed to echo's HTTPErrorHandler here, inside the span, so that the status it
// answers with is recorded; the middleware then returns nil. A nil tp returns a middleware that does nothing.
func Middleware(tp trace.TracerProvider) echo.MiddlewareFunc {
	if tp == nil {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	tracer := tp.Tracer(ScopeName)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			r := c.Request()
			ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			route := c.Path()
			if route == "" {
				route = r.URL.Path
			}
			ctx, span := tracer.Start(ctx, r.Method+" "+route,
				trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attrHTTPMethod.String(r.Method), attrURLPath.String(r.URL.Path)))
			defer span.End()
			defer func() {
				if v := recover(); v != nil {
					span.SetStatus(codes.Error, "panic")
					panic(v) // echo's Recover answers it
				}
			}()
			c.SetRequest(r.WithContext(ctx))

			if err = next(c); err != nil {
				c.Error(err)
				err = nil
			}
			res := c.Response()
			if id := res.Header().Get(echo.HeaderXRequestID); id != "" {
				span.SetAttributes(AttrRequestID.String(id))
			}
			if !res.Committed {
				return nil // the client left before an answer was written (the handler logs it): no status
			}
			status := res.Status
			span.SetAttributes(attrHTTPStatus.Int(status))
			if status >= http.StatusInternalServerError {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			return nil
		}
	}
}
