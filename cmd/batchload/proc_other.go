//go:build !linux

package main

import (
	"os/exec"
	"time"
)

// setParentDeathSignal has no portable equivalent outside Linux; the tool stops batchd itself on every exit path.
func setParentDeathSignal(*exec.Cmd) {}

// processCPU is not read outside Linux.
func processCPU(int) (time.Duration, bool) { return 0, false }
