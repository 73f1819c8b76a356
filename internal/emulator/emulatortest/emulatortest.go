// Package emulatortest starts the in-process Power BI emulator for the
// tests of other packages.
package emulatortest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pushd/pushd/internal/emulator"
)

// StartTLS starts the emulator over TLS with its default config changed by
// mutate (when not nil) and closes it when the test ends. It writes the
// emulator's CA certificate as PEM to a file in a temporary directory and
// returns the emulator and that file's path (powerbi.ca_file).
func StartTLS(t testing.TB, mutate func(*emulator.Config)) (*emulator.Server, string) {
	t.Helper()
	ec := emulator.DefaultConfig()
	ec.TLS = true
	if mutate != nil {
		mutate(&ec)
	}
	emu, err := emulator.Start(ec)
	if err != nil {
		t.Fatalf("starting the emulator: %v", err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	ca := filepath.Join(t.TempDir(), "emulator-ca.pem")
	if err := os.WriteFile(ca, emu.CACertPEM(), 0o600); err != nil {
		t.Fatalf("writing the emulator's CA: %v", err)
	}
	return emu, ca
}
