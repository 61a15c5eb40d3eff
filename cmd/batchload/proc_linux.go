package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel send batchd SIGTERM if the tool dies without stopping it (SIGKILL, crash).
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
