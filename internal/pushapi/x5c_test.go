package pushapi

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/emulator"
)

// issueCert makes a certificate for cn signed by parent (self-signed when
// parent is nil); isCA makes a CA.
func issueCert(t *testing.T, cn string, isCA bool, parent *x509.Certificate, parentKey *rsa.PrivateKey) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestEmulatorSubjectNameIssuer: a certificate registered by subject name
// and issuer signs in only with its chain (send_x5c); one registered by
// thumbprint signs in with or without it; a chain from an issuer the tenant
// does not trust, or a subject not registered, is refused with AADSTS700027.
func TestEmulatorSubjectNameIssuer(t *testing.T) {
	ca, caKey := issueCert(t, "Contoso Issuing CA", true, nil, nil)
	sni, sniKey := issueCert(t, "pushd.contoso.com", false, ca, caKey)
	otherSubject, otherSubjectKey := issueCert(t, "other.contoso.com", false, ca, caKey)
	selfSigned, selfSignedKey := issueCert(t, "pushd.contoso.com", false, nil, nil)
	byThumb, byThumbKey := issueCert(t, "registered by thumbprint", false, nil, nil)
	s := startEmulator(t, func(c *emulator.Config) {
		c.ClientSecret = ""
		c.ClientCertificates = []*x509.Certificate{byThumb}
		c.ClientSubjectNames = []string{"pushd.contoso.com"}
		c.TrustedIssuers = []*x509.Certificate{ca}
	})
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		key  *rsa.PrivateKey
		x5c  bool
		ok   bool
	}{
		{"subject name and issuer with x5c", sni, sniKey, true, true},
		{"subject name and issuer without x5c", sni, sniKey, false, false},
		{"registered subject from an untrusted issuer", selfSigned, selfSignedKey, true, false},
		{"trusted issuer, subject not registered", otherSubject, otherSubjectKey, true, false},
		{"thumbprint without x5c", byThumb, byThumbKey, false, true},
		{"thumbprint with x5c", byThumb, byThumbKey, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := emuConfig(s)
			cfg.Auth = AuthConfig{Method: AuthClientCertificate, TenantID: emulator.DefaultTenant, ClientID: emulator.DefaultClientID,
				CertificateFile: writeCertPEM(t, tc.cert, tc.key), SendX5C: tc.x5c}
			tp, err := NewTokenProvider(cfg, s.Client(), discardLogger(), nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tp.Token(context.Background())
			if tc.ok {
				if err != nil {
					t.Fatalf("Token: %v", err)
				}
				return
			}
			var ae *AuthError
			if !errors.As(err, &ae) || ae.AADSTS != "AADSTS700027" || !ae.Refused() {
				t.Fatalf("Token err = %v, want AADSTS700027", err)
			}
		})
	}
}
