//go:build !race

package race_test

const raceOn = false
