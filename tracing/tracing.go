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
	"bytes"
	"context"
	"errors"
	"net/http"

	"github.com/go-json-experiment/json/jsontext"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchd/batchd/runner"
)

// ScopeName is the instrumentation scope of every span this package starts.
const ScopeName = "github.com/batchd/batchd/tracing"

// Attribute keys batchd adds to the OpenTelemetry semantic conventions.
const (
	AttrStepKey     = attribute.Key("batchd.step.key")     // the step's key in the batch
	AttrStepMethod  = attribute.Key("batchd.step.method")  // the step's method path (runner.Call.Name)
	AttrStepOutcome = attribute.Key("batchd.step.outcome") // ok, error, timeout or skipped (see Invoker)
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
// response came back) and batchd.step.outcome, which classifies the call the way the runner and the metrics do:
//
//   - ok: a response with status < 400 whose body is not a JSON object with "ok": false;
//   - error: status >= 400, "ok": false (REGOS business error), or no usable response (the error is recorded);
//   - timeout: the call's context ended with the runner's step or batch timeout as its cause;
//   - skipped: the call's context ended for another reason (the client left, the server shut down).
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

	outcome, desc := runner.OutcomeOK, ""
	switch {
	case err != nil || ctx.Err() != nil:
		outcome, desc = failedOutcome(ctx, err)
		if err != nil {
			span.RecordError(err)
		}
	case resp.Status >= 400:
		outcome, desc = runner.OutcomeError, http.StatusText(resp.Status)
	case businessFailure(resp.Body):
		outcome, desc = runner.OutcomeError, "ok: false"
	}
	if err == nil {
		span.SetAttributes(attrHTTPStatus.Int(resp.Status))
	}
	span.SetAttributes(AttrStepOutcome.String(string(outcome)))
	if outcome != runner.OutcomeOK {
		span.SetStatus(codes.Error, desc)
	}
	return resp, err
}

// failedOutcome classifies a call that returned an error or whose context ended, as runner.invokeFailed does.
func failedOutcome(ctx context.Context, err error) (runner.Outcome, string) {
	if ctx.Err() != nil {
		var ste *runner.StepTimeoutError
		var bte *runner.BatchTimeoutError
		cause := context.Cause(ctx)
		if errors.As(cause, &ste) || errors.As(cause, &bte) {
			return runner.OutcomeTimeout, cause.Error()
		}
		return runner.OutcomeSkipped, "cancelled: " + cause.Error()
	}
	var ie *runner.InvokeError
	if errors.As(err, &ie) {
		return runner.OutcomeError, "upstream " + ie.Kind
	}
	return runner.OutcomeError, "upstream unreachable"
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

// businessFailure reports whether body is a JSON object whose first top-level "ok" member is false: REGOS reports
// business errors as HTTP 200 with ok:false, and the runner counts them as failures. It reads only up to that member
// (REGOS puts it first); a body that is not well-formed up to there is not a business failure, as in the runner.
func businessFailure(body []byte) bool {
	b := bytes.TrimLeft(body, " \t\r\n")
	if len(b) < len(`{"ok":false}`) || b[0] != '{' {
		return false
	}
	// A *bytes.Buffer is decoded in place, without a copy.
	d := jsontext.NewDecoder(bytes.NewBuffer(b), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if tok, err := d.ReadToken(); err != nil || tok.Kind() != '{' {
		return false
	}
	for {
		name, err := d.ReadValue()
		if err != nil || name.Kind() != '"' {
			return false // '}' (no "ok" member) or malformed
		}
		if isOKName(name) {
			v, err := d.ReadValue()
			return err == nil && v.Kind() == 'f'
		}
		if d.SkipValue() != nil {
			return false
		}
	}
}

// isOKName reports whether the JSON string literal name spells "ok", escapes included.
func isOKName(name jsontext.Value) bool {
	if string(name) == `"ok"` {
		return true
	}
	if bytes.IndexByte(name, '\\') < 0 || len(name) > 16 {
		return false // "ok" with escapes is at most "\u006f\u006b", 14 bytes
	}
	s, err := jsontext.AppendUnquote(nil, name)
	return err == nil && string(s) == "ok"
}
