package tracing

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchd/batchd/runner"
)

// invokerFunc is a fake runner.Invoker.
type invokerFunc func(context.Context, runner.Call) (runner.Response, error)

func (f invokerFunc) Invoke(ctx context.Context, c runner.Call) (runner.Response, error) {
	return f(ctx, c)
}

func TestInvokerHeadersAndParent(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, parent := tp.Tracer("test").Start(context.Background(), "batch")

	// The batch's shared header, as transport builds it, plus a step's own spelling of a trace header.
	shared := http.Header{
		"Authorization": {"Bearer t"},
		"Traceparent":   {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Tracestate":    {"stale=1"},
		"traceparent":   {"00-11111111111111111111111111111111-2222222222222222-01"},
	}
	before := shared.Clone()
	var got http.Header
	inv := Invoker(invokerFunc(func(ctx context.Context, c runner.Call) (runner.Response, error) {
		got = c.Header
		return runner.Response{Status: 201, Body: []byte(`{"ok":true}`)}, nil
	}), tp)
	resp, err := inv.Invoke(ctx, runner.Call{Key: "k", Name: "Producer/Add", Path: "Producer/Add", Header: shared})
	require.NoError(t, err)
	assert.Equal(t, 201, resp.Status)
	parent.End()

	assert.Equal(t, before, shared, "the shared header map is never modified")
	spans := rec.Ended()
	require.Len(t, spans, 2)
	step := spans[0]
	assert.Equal(t, "step Producer/Add", step.Name())
	assert.Equal(t, parent.SpanContext().SpanID(), step.Parent().SpanID())
	want := "00-" + step.SpanContext().TraceID().String() + "-" + step.SpanContext().SpanID().String() + "-01"
	assert.Equal(t, []string{want}, got["Traceparent"])
	assert.NotContains(t, got, "traceparent")
	assert.NotContains(t, got, "Tracestate", "a tracestate that does not belong to the new traceparent is dropped")
	assert.Equal(t, []string{"Bearer t"}, got["Authorization"])
	assert.Contains(t, step.Attributes(), attrHTTPMethod.String("POST"), "the invokers' default method")
}

func TestInvokerOutcomes(t *testing.T) {
	stepTimeout := func() (context.Context, context.CancelFunc) {
		return context.WithTimeoutCause(context.Background(), time.Nanosecond, &runner.StepTimeoutError{Key: "k", Timeout: time.Nanosecond})
	}
	batchTimeout := func() (context.Context, context.CancelFunc) {
		return context.WithTimeoutCause(context.Background(), time.Nanosecond, &runner.BatchTimeoutError{Timeout: time.Nanosecond})
	}
	cancelled := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx, cancel
	}
	background := func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }
	connErr := &runner.InvokeError{Kind: "connect", Err: syscall.ECONNREFUSED}

	for _, tc := range []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		resp    runner.Response
		err     error
		outcome string
		status  int64 // 0: none recorded
		code    codes.Code
		events  int
	}{
		{"ok", background, runner.Response{Status: 200, Body: []byte(`{"ok":true,"result":1}`)}, nil, "ok", 200, codes.Unset, 0},
		{"not JSON object", background, runner.Response{Status: 204, Body: []byte(`null`)}, nil, "ok", 204, codes.Unset, 0},
		{"http error", background, runner.Response{Status: 404, Body: []byte(`"no"`)}, nil, "error", 404, codes.Error, 0},
		{"ok false", background, runner.Response{Status: 200, Body: []byte(` {"ok": false, "result": {}}`)}, nil, "error", 200, codes.Error, 0},
		{"unreachable", background, runner.Response{}, connErr, "error", 0, codes.Error, 1},
		{"untyped error", background, runner.Response{}, errors.New("x"), "error", 0, codes.Error, 1},
		{"step timeout", stepTimeout, runner.Response{}, context.DeadlineExceeded, "timeout", 0, codes.Error, 1},
		{"batch timeout", batchTimeout, runner.Response{}, context.DeadlineExceeded, "timeout", 0, codes.Error, 1},
		{"cancelled", cancelled, runner.Response{}, context.Canceled, "skipped", 0, codes.Error, 1},
		// The runner treats a response that came back after the deadline as a timeout; so does the span.
		{"late response", stepTimeout, runner.Response{Status: 200, Body: []byte(`{}`)}, nil, "timeout", 200, codes.Error, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			ctx, cancel := tc.ctx()
			defer cancel()
			if _, ok := ctx.Deadline(); ok {
				<-ctx.Done()
			}
			inv := Invoker(invokerFunc(func(context.Context, runner.Call) (runner.Response, error) { return tc.resp, tc.err }), tp)
			_, err := inv.Invoke(ctx, runner.Call{Key: "k", Method: "GET", Name: "M"})
			assert.Equal(t, tc.err, err, "the error is passed on as is")
			spans := rec.Ended()
			require.Len(t, spans, 1)
			s := spans[0]
			a := map[string]any{}
			for _, kv := range s.Attributes() {
				a[string(kv.Key)] = kv.Value.AsInterface()
			}
			assert.Equal(t, tc.outcome, a["batchd.step.outcome"])
			if tc.status != 0 {
				assert.Equal(t, tc.status, a["http.response.status_code"])
			} else {
				assert.NotContains(t, a, "http.response.status_code")
			}
			assert.Equal(t, "GET", a["http.request.method"])
			assert.Equal(t, "k", a["batchd.step.key"])
			assert.Equal(t, "M", a["batchd.step.method"])
			assert.Equal(t, tc.code, s.Status().Code)
			assert.Len(t, s.Events(), tc.events)
			assert.Equal(t, trace.SpanKindClient, s.SpanKind())
		})
	}
}

func TestInvokerPanic(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	inv := Invoker(invokerFunc(func(context.Context, runner.Call) (runner.Response, error) { panic("boom") }), tp)
	assert.PanicsWithValue(t, "boom", func() { _, _ = inv.Invoke(context.Background(), runner.Call{Name: "M"}) },
		"the panic reaches the runner, which recovers it")
	spans := rec.Ended()
	require.Len(t, spans, 1)
	assert.Equal(t, codes.Error, spans[0].Status().Code)
	assert.Contains(t, spans[0].Attributes(), AttrStepOutcome.String("error"))
}

func TestConfigFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{"unset", nil, Config{}, ""},
		{"base", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			Config{Endpoint: "http://collector:4318/v1/traces"}, ""},
		{"base with path", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example/ingest/"},
			Config{Endpoint: "https://otel.example/ingest/v1/traces"}, ""},
		{"traces endpoint as is", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://ignored:4318",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/custom",
			"OTEL_SERVICE_NAME":                  "edge-batchd",
		}, Config{Endpoint: "http://collector:4318/custom", ServiceName: "edge-batchd"}, ""},
		{"traces endpoint without path", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318"},
			Config{Endpoint: "http://collector:4318/"}, ""},
		{"http/protobuf", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			Config{Endpoint: "http://c:4318/v1/traces"}, ""},
		{"per-signal protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
			Config{Endpoint: "http://c:4318/v1/traces"}, ""},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, Config{}, ""},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, Config{}, ""},
		{"grpc refused", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			Config{}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"other exporter refused", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "zipkin"},
			Config{}, "OTEL_TRACES_EXPORTER"},
		{"no scheme", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, Config{}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"user info", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://u:secret@c:4318"}, Config{}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConfigFromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.NotContains(t, err.Error(), "secret", "the error does not echo credentials")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestNewProvider(t *testing.T) {
	exports := make(chan struct{}, 16)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" {
			exports <- struct{}{}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()

	for _, tc := range []struct{ cfg, want string }{{"", DefaultServiceName}, {"edge", "edge"}} {
		tp, err := NewProvider(context.Background(), Config{Endpoint: collector.URL + "/v1/traces", ServiceName: tc.cfg})
		require.NoError(t, err)
		rec := tracetest.NewSpanRecorder()
		tp.RegisterSpanProcessor(rec)
		_, span := tp.Tracer("test").Start(context.Background(), "s")
		span.End()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, tp.Shutdown(ctx), "shutdown flushes the batch")
		cancel()
		select {
		case <-exports:
		default:
			t.Fatal("no export request by the time Shutdown returned")
		}
		require.Len(t, rec.Ended(), 1)
		name, ok := rec.Ended()[0].Resource().Set().Value("service.name")
		require.True(t, ok)
		assert.Equal(t, tc.want, name.AsString())
	}

	_, err := NewProvider(context.Background(), Config{})
	require.Error(t, err)
}

// BenchmarkInvoker is the per-step cost of tracing when it is on: a sampled span, the header copy and injection,
// the ok:false check.
func BenchmarkInvoker(b *testing.B) {
	tp := sdktrace.NewTracerProvider() // sampled, no processor: measures batchd's side, not an exporter's
	ctx, parent := tp.Tracer("bench").Start(context.Background(), "batch")
	defer parent.End()
	body := []byte(`{"ok":true,"result":{"id":1,"name":"Coca-Cola","last_update":1758289402}}`)
	inv := Invoker(invokerFunc(func(context.Context, runner.Call) (runner.Response, error) {
		return runner.Response{Status: 200, Body: body}, nil
	}), tp)
	call := runner.Call{Key: "k", Name: "Producer/Get", Path: "Producer/Get", Header: http.Header{
		"Authorization": {"Bearer t"}, "X-Request-Id": {"r"}, "Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inv.Invoke(ctx, call); err != nil {
			b.Fatal(err)
		}
	}
}
