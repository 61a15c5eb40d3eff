package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// DefaultServiceName is the service.name of batchd's resource unless OTEL_SERVICE_NAME (or service.name in
// OTEL_RESOURCE_ATTRIBUTES) says otherwise.
const DefaultServiceName = "batchd"

// Config is what decides whether and where batchd exports traces.
type Config struct {
	// Endpoint is the full OTLP/HTTP traces URL (e.g. http://collector:4318/v1/traces); empty: tracing is off.
	Endpoint string
	// ServiceName is the resource's service.name; empty: DefaultServiceName.
	ServiceName string
}

// ConfigFromEnv reads the standard OpenTelemetry variables that turn tracing on, through getenv (os.Getenv in
// production, a map in tests):
//
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: the traces URL, used as is (a URL without a path means "/");
//   - otherwise OTEL_EXPORTER_OTLP_ENDPOINT: a base URL, to which "v1/traces" is appended;
//   - neither set, OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none: tracing off (a zero Config);
//   - OTEL_SERVICE_NAME: the service name.
//
// The endpoint must be an absolute http or https URL without user info. batchd exports OTLP over HTTP with protobuf only: an
// OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL other than http/protobuf, or an OTEL_TRACES_EXPORTER other than otlp or none,
// is an error rather than a silent change of protocol.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	if strings.EqualFold(env("OTEL_SDK_DISABLED"), "true") {
		return Config{}, nil
	}
	switch exp := env("OTEL_TRACES_EXPORTER"); strings.ToLower(exp) {
	case "none":
		return Config{}, nil
	case "", "otlp":
	default:
		return Config{}, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: batchd exports traces with otlp (or none)", exp)
	}
	var (
		name, raw string
		base      bool
	)
	if raw = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); raw != "" {
		name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	} else if raw = env("OTEL_EXPORTER_OTLP_ENDPOINT"); raw != "" {
		name, base = "OTEL_EXPORTER_OTLP_ENDPOINT", true
	} else {
		return Config{}, nil
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := env(k); p != "" {
			if p != "http/protobuf" {
				return Config{}, fmt.Errorf("%s=%q: batchd exports OTLP over HTTP only (http/protobuf)", k, p)
			}
			break // the per-signal variable wins
		}
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		// No user info: the endpoint is logged at startup; credentials belong in OTEL_EXPORTER_OTLP_HEADERS.
		return Config{}, fmt.Errorf("%s: must be an absolute http(s) URL with a host and no user info, query or fragment", name)
	}
	switch {
	case base:
		u.Path, u.RawPath = path.Join("/", u.Path, "v1/traces"), "" // the OTLP spec: signal path relative to the base
	case u.Path == "":
		u.Path = "/"
	}
	return Config{Endpoint: u.String(), ServiceName: env("OTEL_SERVICE_NAME")}, nil
}

// NewProvider returns a TracerProvider that exports to cfg.Endpoint over OTLP/HTTP through a batch span processor,
// with a resource naming the service (service.name, then OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME from the
// process environment, which win). The SDK reads its other variables from the process environment itself:
// OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE…, OTEL_TRACES_SAMPLER(_ARG) (default
// parentbased_always_on), OTEL_BSP_*. The caller must Shutdown the provider, with a bounded context, to flush the
// last spans. Nothing is sent and no connection is made until the first batch of spans.
func NewProvider(ctx context.Context, cfg Config) (*sdktrace.TracerProvider, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("tracing: no endpoint")
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.Endpoint))
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	name := cfg.ServiceName
	if name == "" {
		name = DefaultServiceName
	}
	// Later detectors win: the environment's resource attributes override the default name.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", name)),
		resource.WithFromEnv(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}
