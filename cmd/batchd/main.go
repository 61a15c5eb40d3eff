// Command batchd serves the batch endpoint: one HTTP request holding up to 50 API calls, run in dependency order
// with independent calls in parallel. See README.md for its flags and its wire format.
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
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	var usage *usageError
	switch {
	case err == nil:
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "batchd:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "batchd:", err)
		os.Exit(1)
	}
}
