//go:build race

package reduce

// scale divides the event counts of the at-scale tests under the race
// detector, which makes them ten times slower; without it they run at the
// issue's sizes.
const scale = 10
