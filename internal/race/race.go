// Package race tells tests whether the binary was built with the race detector, under which sync.Pool drops items
// at random and allocation counts mean nothing.
package race

import "runtime/debug"

// Enabled reports whether the running binary was built with -race.
func Enabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}
