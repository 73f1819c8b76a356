//go:build !race

package reduce

// scale: see race_on_test.go.
const scale = 1
