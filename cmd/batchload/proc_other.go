//go:build !linux

package main

import "os/exec"

// setParentDeathSignal has no portable equivalent outside Linux; the tool stops batchd itself on every exit path.
func setParentDeathSignal(*exec.Cmd) {}
