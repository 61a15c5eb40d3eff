// Package batchd is a dependency-aware batch executor for JSON APIs (CONTRACT.md is the wire contract, README.md the
// guide); this root package only embeds openapi.yaml, the OpenAPI 3.0.3 description of the HTTP interface. Layout,
// imports flowing one way (cmd → transport → runner → planner):
//
//	cmd/batchd            main and run(): flags with env fallbacks, wiring in dependency order, graceful drain
//	planner, runner       request → validated acyclic Plan; execution through an Invoker, results in request order
//	transport             HTTP server, routes, HTTP and in-process invokers; transport/demoapi, the demo API
//	idempotency, ratelimit, tracing  opt-in guards and OpenTelemetry, wired in run()
//	metrics, errcode      Prometheus metrics (seen through interfaces); the ErrorResult code table
//	deploy, cmd/batchload container, Kubernetes, Prometheus and Grafana files; the load tool of SCENARIOS.md
package batchd

import (
	_ "embed"
	"slices"
)

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI returns the OpenAPI 3.0.3 description of batchd's HTTP interface (openapi.yaml), as served at
// GET /openapi.yaml. Each call returns a fresh copy, so no caller can change what another one sees.
func OpenAPI() []byte { return slices.Clone(openAPI) }
