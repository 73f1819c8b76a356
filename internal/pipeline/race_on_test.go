//go:build race

package pipeline

// raceDetector reports whether the tests run with -race, which makes the
// big in-process runs several times slower.
const raceDetector = true
