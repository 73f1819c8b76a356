package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/provision/provisiontest"
)

// certificatePEM makes a self-signed certificate and its key as PEM; with
// encrypted the key block is PKCS#8 marked encrypted (its bytes do not
// matter: pushd must refuse it before decrypting anything).
func certificatePEM(t *testing.T, encrypted bool) (*x509.Certificate, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "pushd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyType := "PRIVATE KEY"
	if encrypted {
		keyType = "ENCRYPTED PRIVATE KEY"
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return cert, append(out, pem.EncodeToMemory(&pem.Block{Type: keyType, Bytes: keyDER})...)
}

// TestRunExitsAtOnceOnARefusedCredential: `pushd run` with a certificate
// the app does not have (or an encrypted key) exits 1 at once, naming
// Entra's code and `pushd doctor`, after one sign-in attempt.
func TestRunExitsAtOnceOnARefusedCredential(t *testing.T) {
	registered, _ := certificatePEM(t, false)
	_, wrongPEM := certificatePEM(t, false)
	_, encryptedPEM := certificatePEM(t, true)
	ec := emulator.DefaultConfig()
	ec.TLS = true
	ec.ClientCertificates = []*x509.Certificate{registered}
	emu, err := emulator.Start(ec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := write("ca.pem", emu.CACertPEM())
	configFor := func(name string, certPEM []byte) string {
		return write(name, fmt.Appendf(nil, `powerbi:
  api_url: %s
  authority_url: %s
  ca_file: %s
  auth:
    method: client_certificate
    tenant_id: %s
    client_id: %s
    certificate_file: %s
  retry: {initial_backoff: 10ms, max_backoff: 50ms, max_elapsed: 3s}   # so that a retrying pushd fails this test instead of hanging it
metrics: {enabled: false}
pipelines:
%s`, emu.URL(), emu.URL(), ca, emulator.DefaultTenant, emulator.DefaultClientID, write(name+".pem", certPEM),
			provisiontest.Pipeline("p", "D", "T", false, "{name: A, type: String}")))
	}
	for _, tc := range []struct {
		name, config string
		want         []string
		signIns      int64
	}{
		{"certificate not registered", configFor("wrong.yaml", wrongPEM), []string{"AADSTS700027", "Entra ID refuses the credential"}, 1},
		{"encrypted key", configFor("encrypted.yaml", encryptedPEM), []string{"powerbi.auth", "the private key is encrypted"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			emu.Reset()
			start := time.Now()
			code, _, errOut := runCmd(t, "", "run", "-c", tc.config)
			t.Logf("exit %d after %s", code, time.Since(start).Round(time.Millisecond))
			if code != exitFailed {
				t.Fatalf("exit %d, want %d\n%s", code, exitFailed, errOut)
			}
			mustContain(t, "stderr", errOut, append(tc.want, "pushd doctor -c "+tc.config)...)
			if st := emu.Stats(); st.TokenErrors != tc.signIns || st.Requests[emulator.RouteGetDatasets] != nil {
				t.Errorf("token errors %d (want %d), dataset requests %v: pushd retried or went on", st.TokenErrors, tc.signIns, st.Requests[emulator.RouteGetDatasets])
			}
		})
	}
}
