package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/batchd/batchd/metrics"
)

// version and revision are set when the binary is linked, by make build and the Dockerfile:
//
//	go build -ldflags "-X main.version=$(git describe --tags --always --dirty) -X main.revision=$(git rev-parse HEAD)"
//
// They are the one exception to "no package variables": the linker can only set a variable.
var version, revision string

// buildInfo is the running binary's version: the linked values, else what the Go toolchain stamped (the module
// version, which go build derives from the VCS, and the VCS revision), else "devel" and "unknown".
func buildInfo() metrics.BuildInfo {
	return readBuildInfo(version, revision, debug.ReadBuildInfo)
}

func readBuildInfo(linkedVersion, linkedRevision string, read func() (*debug.BuildInfo, bool)) metrics.BuildInfo {
	b := metrics.BuildInfo{Version: linkedVersion, Revision: linkedRevision, GoVersion: runtime.Version()}
	if bi, ok := read(); ok {
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		if b.Revision == "" {
			modified := false
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					b.Revision = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if b.Revision != "" && modified {
				b.Revision += "-dirty"
			}
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	if b.Revision == "" {
		b.Revision = "unknown"
	}
	return b
}

// printVersion is what -version prints.
func printVersion(w io.Writer, b metrics.BuildInfo) {
	fmt.Fprintf(w, "batchd %s\nrevision %s\ngo %s\n", b.Version, b.Revision, b.GoVersion)
}
