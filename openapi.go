// Package batchd is a dependency-aware batch executor for JSON APIs; CONTRACT.md is its wire contract and README.md
// its user guide. This root package holds only the OpenAPI description of the HTTP interface, embedded.
//
// The module's layout, imports flowing one way (cmd → transport → runner → planner):
//
//	cmd/batchd          main and run(): flags with env fallbacks, wiring, graceful drain
//	planner             batch request → validated, acyclic, immutable Plan (steps, dependencies, placeholders)
//	runner              executes a Plan through an Invoker; results in request order; the answer's JSON
//	transport           the HTTP server and its routes, HTTP and in-process invokers; demoapi: the embedded demo API
//	metrics, errcode    Prometheus metrics (seen by runner through an interface); the ErrorResult code table
//	deploy, cmd/batchload  Docker, Kubernetes, Prometheus rules, Grafana; the load tool of SCENARIOS.md
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
