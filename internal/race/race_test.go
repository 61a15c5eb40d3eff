package race_test

import (
	"testing"

	"github.com/batchd/batchd/internal/race"
)

// The answer must match how this test binary was built: raceOn is set by race_on_test.go under -race.
func TestEnabled(t *testing.T) {
	if race.Enabled() != raceOn {
		t.Fatalf("Enabled() = %v, built with -race: %v", race.Enabled(), raceOn)
	}
}
