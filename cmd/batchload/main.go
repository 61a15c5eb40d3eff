// Command batchload measures batchd on the standard performance scenarios listed in its README.md (a50, b50, c10, d10)
// and on the demo-mode comparison (demo10), with the client-side baselines measured in the same run against the
// same upstream, and prints one table per scenario with its targets evaluated as ratios.
//
// By default it starts everything itself, on loopback only: an upstream that counts every call, in a child process
// as a real upstream is another process (-upstream-process=false keeps it in this one), and bin/batchd as a
// subprocess in front of it (and a second one in demo mode for demo10). Every run verifies 0 errors
// and exactly N upstream calls per batch; a failed check exits 1, a missed target exits 2.
//
//	go build -o bin/batchd ./cmd/batchd
//	go run ./cmd/batchload -scenario all -format markdown
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if spec := os.Getenv(childEnv); spec != "" { // re-executed as a child upstream (-upstream-process)
		err := serveUpstreamChild(ctx, spec, os.Stdin, os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "batchload upstream:", err)
			os.Exit(1)
		}
		return
	}
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "batchload:", err)
		if errors.Is(err, errTargetMissed) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
