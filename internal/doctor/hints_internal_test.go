package doctor

import (
	"os"
	"path/filepath"
	"testing"
)

// TestManagedIdentityEnvironment: which hosts count as offering a managed
// identity, decided without a network call (a test must not reach the
// metadata address, which is not loopback).
func TestManagedIdentityEnvironment(t *testing.T) {
	azure := t.TempDir()
	if err := os.WriteFile(filepath.Join(azure, "chassis_asset_tag"), []byte("7783-7084-3265-9085\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "chassis_asset_tag"), []byte("No Asset Tag\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		dmi  string
		want bool
	}{
		{"App Service", map[string]string{"IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi"}, other, true},
		{"Cloud Shell", map[string]string{"MSI_ENDPOINT": "http://127.0.0.1:1/msi"}, other, true},
		{"Azure VM", nil, azure, true},
		{"laptop", nil, other, false},
		{"container without DMI", nil, filepath.Join(other, "absent"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &run{opts: Options{Getenv: func(k string) string { return tc.env[k] }, DMIDir: tc.dmi}}
			c, ok := r.managedIdentityEnvironment()
			if ok != tc.want {
				t.Errorf("ok = %v, want %v (%+v)", ok, tc.want, c)
			}
			if !ok && (c.Status != Fail || c.Fix == "") {
				t.Errorf("check = %+v, want a failure with a fix", c)
			}
		})
	}
}
