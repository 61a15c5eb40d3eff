// Package tracing gives batchd OpenTelemetry traces: one server span per batch request and one client span per
// executed step, with the W3C trace context (traceparent, tracestate) of the step's span sent to the upstream.
//
// Contract:
//   - Nothing here is global: no otel.SetTracerProvider, no global propagator. The TracerProvider is passed in, and
//     run wires Middleware and Invoker only when ConfigFromEnv finds an OTLP endpoint; with tracing off there is no
//     tracing object on the request path at all.
//   - Middleware starts the batch span ("POST /v1/batch", kind server) as a child of the W3C context the client sent
//     (or as a root) and puts it in the request's context, which the runner passes on to every invocation.
//   - Invoker starts a step span ("step <method path>", kind client) per invocation, a child of the span in the
//     call's context, and replaces the call's traceparent and tracestate with the step span's own in a copy of the
//     call's headers: the upstream sees the step span as its parent, never the client's span that transport forwards
//     by default. The call's header map is shared between steps and is never modified.
//   - A step the runner never invokes (424 dependency failed, 412 not executed, an unresolvable placeholder, a batch
//     cancelled before the step started) has no span: the batch span and the response tell its story.
//   - Both are safe for concurrent use; the attribute sets are bounded by what the batch names (keys, method paths).
package tracing

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchd/batchd/runner"
)

// ScopeName is the instrumentation scope of every span this package starts.
const ScopeName = "github.com/batchd/batchd/internal/tracing"

// Attribute keys batchd adds to the OpenTelemetry semantic conventions.
const (
	AttrStepKey     = attribute.Key("batchd.step.key")     // the step's key in the batch
	AttrStepMethod  = attribute.Key("batchd.step.method")  // the step's method path (runner.Call.Name)
	AttrStepOutcome = attribute.Key("batchd.step.outcome") // runner.CallOutcome (see Invoker)
	AttrRequestID   = attribute.Key("batchd.request_id")   // the batch's X-Request-Id
)

// Semantic-convention keys (stable HTTP conventions), spelled out rather than importing a semconv version.
const (
	attrHTTPMethod = attribute.Key("http.request.method")
	attrHTTPStatus = attribute.Key("http.response.status_code")
	attrURLPath    = attribute.Key("url.path")
)

// Invoker returns next decorated with a client span per call. The span is named "step <Call.Name>" and carries
// batchd.step.key, batchd.step.method and http.request.method; when the call ends, http.response.status_code (if a
// response came back) and batchd.step.outcome, the call's runner.CallOutcome (the classification the runner and the
// metrics use: ok, error, timeout, skipped, over_budget).
//
// Every outcome but ok sets the span status to Error. A nil tp returns next unchanged.
func Invoker(next runner.Invoker, tp trace.TracerProvider) runner.Invoker {
	if tp == nil {
		return next
	}
	return &invoker{next: next, tracer: tp.Tracer(ScopeName)}
}

type invoker struct {
	next   runner.Invoker
	tracer trace.Tracer
}

var _ runner.Invoker = (*invoker)(nil)

func (in *invoker) Invoke(ctx context.Context, call runner.Call) (resp runner.Response, err error) {
	method := call.Method
	if method == "" {
		method = http.MethodPost // the invokers' default
	}
	ctx, span := in.tracer.Start(ctx, "step "+call.Name,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			AttrStepKey.String(call.Key),
			AttrStepMethod.String(call.Name),
			attrHTTPMethod.String(method),
		))
	defer span.End()
	// The runner recovers a panicking invoker and fails the step; the span says so before the panic moves on.
	defer func() {
		if v := recover(); v != nil {
			span.SetAttributes(AttrStepOutcome.String(string(runner.OutcomeError)))
			span.SetStatus(codes.Error, "panic")
			panic(v)
		}
	}()

	call.Header = withTraceContext(ctx, call.Header)
	resp, err = in.next.Invoke(ctx, call)

	outcome := runner.CallOutcome(ctx, call, resp, err)
	if err != nil {
		span.RecordError(err)
	} else {
		span.SetAttributes(attrHTTPStatus.Int(resp.Status))
	}
	span.SetAttributes(AttrStepOutcome.String(string(outcome)))
	if outcome != runner.OutcomeOK {
		span.SetStatus(codes.Error, statusDescription(ctx, outcome, resp, err))
	}
	return resp, err
}

// statusDescription says why a call whose outcome is not ok failed, for its span's status.
func statusDescription(ctx context.Context, o runner.Outcome, resp runner.Response, err error) string {
	switch {
	case o == runner.OutcomeTimeout || o == runner.OutcomeSkipped:
		return context.Cause(ctx).Error()
	case err != nil:
		return err.Error()
	case resp.Status >= 400:
		return http.StatusText(resp.Status)
	}
	return "ok: false"
}

// traceHeaders are the W3C headers Invoker owns on a traced call, canonical.
var traceHeaders = [...]string{"Traceparent", "Tracestate"}

// withTraceContext returns a copy of h whose traceparent and tracestate are those of ctx's span. The copy is
// shallow (value slices are shared and must stay unmodified, as with the call's own header); h is never written.
// Any earlier trace headers are dropped first, whatever their spelling, so that a forwarded tracestate cannot
// outlive the traceparent it belonged to.
func withTraceContext(ctx context.Context, h http.Header) http.Header {
	out := make(http.Header, len(h)+len(traceHeaders))
	for k, v := range h {
		if !isTraceHeader(k) {
			out[k] = v
		}
	}
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(out))
	return out
}

func isTraceHeader(k string) bool {
	for _, t := range traceHeaders {
		if len(k) == len(t) && (k == t || http.CanonicalHeaderKey(k) == t) {
			return true
		}
	}
	return false
}
