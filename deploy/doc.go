// Package deploy holds batchd's deployment files, and the tests that keep them honest:
//
//   - Dockerfile, docker-compose.yml: structure checked (multi-stage, static, non-root, no HEALTHCHECK; every
//     mounted file exists and the services agree on names and ports);
//   - kubernetes/: every manifest decoded strictly into the k8s.io/api types (unknown fields and wrong types fail),
//     probes, security context, resources, selectors and the termination grace period checked;
//   - prometheus/: promtool check config, check rules and test rules (a unit test per alert);
//   - grafana/: the dashboard's structure, and every PromQL expression of the dashboard and the rules parsed by
//     promtool and checked to name only series that batchd's registry (package metrics) or the rules produce;
//   - an end-to-end test: a real Prometheus scraping a running batchd.
//
// The tests need promtool and prometheus (Debian package prometheus). Without them they skip, unless CI=true, where
// a missing tool fails the run.
//
// See README.md for operating batchd: its metrics, alerts, dashboard and scaling.
package deploy
