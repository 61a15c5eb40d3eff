package main

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// TestMain lets the test binary serve as a child upstream, as the real binary does under -upstream-process.
func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		if err := serveUpstreamChild(context.Background(), spec, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
