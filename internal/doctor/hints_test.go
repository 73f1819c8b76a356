package doctor_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/doctor"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/provision/provisiontest"
)

// TestDoctorLeadsToTheFix: mistakes reproduced on the emulator, each with
// the fix that applies to it rather than a generic one.
func TestDoctorLeadsToTheFix(t *testing.T) {
	env := provisiontest.Start(t)
	env.CreateDataset(t, "Push", "Good", "Readings", tableColumns...)
	base := env.PowerBI(emulator.DefaultClientSecret)
	pipelines := "pipelines:\n" + provisiontest.Pipeline("telemetry", "Good", "Readings", false, configColumns...)
	managedIdentity := func(s string) string {
		i := strings.Index(s, "  auth:")
		j := strings.Index(s, "  retry:")
		return s[:i] + "  auth:\n    method: managed_identity\n" + s[j:]
	}
	noDMI := t.TempDir()
	for _, tc := range []struct {
		name   string
		edit   func(string) string
		env    map[string]string // process environment (MSAL reads it)
		getenv map[string]string // what doctor's own check sees
		want   want
	}{
		{name: "certificate not trusted", edit: func(s string) string {
			return strings.Replace(s, "  ca_file: "+env.CAFile+"\n", "", 1)
		}, want: want{"token", doctor.Fail, nil, []string{"powerbi.ca_file", "not a DNS or firewall problem"}}},
		{name: "no managed-identity environment", edit: managedIdentity,
			want: want{"token", doctor.Fail, []string{"no managed-identity environment", "IDENTITY_ENDPOINT", "not an Azure VM", "no request was made"}, []string{"IDENTITY_ENDPOINT and IDENTITY_HEADER", "workload_identity"}}},
		{name: "managed identity refused", edit: managedIdentity,
			env:    map[string]string{"IDENTITY_ENDPOINT": env.Emulator.ManagedIdentityEndpoint(), "IDENTITY_HEADER": "wrong-header"},
			getenv: map[string]string{"IDENTITY_ENDPOINT": env.Emulator.ManagedIdentityEndpoint()},
			want:   want{"token", doctor.Fail, nil, []string{"IDENTITY_ENDPOINT and IDENTITY_HEADER", "assign the identity"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := filepath.Join(t.TempDir(), "doctor.yaml")
			if err := os.WriteFile(path, []byte(tc.edit(base)+pipelines), 0o600); err != nil {
				t.Fatal(err)
			}
			before := len(env.Emulator.Stats().Requests[emulator.RouteManagedIdentity])
			rep := doctor.Run(context.Background(), doctor.Options{Path: path, StepTimeout: 5 * time.Second,
				Getenv: func(k string) string { return tc.getenv[k] }, DMIDir: noDMI})
			if rep.OK() {
				t.Errorf("OK() = true\n%s", dump(rep))
			}
			checkStep(t, rep, tc.want)
			after := len(env.Emulator.Stats().Requests[emulator.RouteManagedIdentity])
			if tc.getenv == nil && after != before {
				t.Errorf("doctor asked the managed-identity endpoint %d times without a managed-identity environment", after-before)
			}
		})
	}
}
