package emulator

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"strings"
)

// AzureADTokenExchange is the audience Entra ID expects in a federated
// token by default (and the AKS workload identity webhook requests).
const AzureADTokenExchange = "api://AzureADTokenExchange"

// FederatedCredential is a federated identity credential of a client: the
// client signs in with a JWT from an outside issuer (an AKS cluster's
// service account token) instead of a secret or certificate.
type FederatedCredential struct {
	// Issuer is the token issuer trusted (the cluster's OIDC issuer URL),
	// matched exactly, as Entra ID does.
	Issuer string
	// Subject is the token subject trusted, matched exactly (case too), e.g.
	// "system:serviceaccount:NAMESPACE:NAME".
	Subject string
	// Audience is the audience the token must carry (default
	// AzureADTokenExchange).
	Audience string
	// Keys verify the token's signature (RSA or ECDSA public keys): the
	// emulator's stand-in for the issuer's published JWKS.
	Keys []crypto.PublicKey
}

func (f FederatedCredential) audience() string {
	if f.Audience == "" {
		return AzureADTokenExchange
	}
	return f.Audience
}

// federatedClaims are the claims of a federated token the emulator checks.
type federatedClaims struct {
	Aud []string
	Iss string
	Sub string
}

// checkFederated verifies a client_assertion that is a federated token (its
// iss is not the client id) against c's federated credentials, with the
// codes Entra ID answers: AADSTS70021 when the client has none, 700211 for
// an issuer none trusts, 700212 for the audience, 700213 for the subject
// (7002138 when it matches only without case), 700024 out of its validity
// time, 700027 for a signature no key of the issuer verifies (the
// emulator's choice). It returns 0 when accepted.
func (s *Server) checkFederated(c Client, jwt string, h assertionHeader, cl assertionClaims) (int, string) {
	fc := federatedClaims{Iss: cl.Iss, Sub: cl.Sub, Aud: audiences(cl.Aud)}
	const check = " Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
	if len(c.Federated) == 0 {
		return 70021, fmt.Sprintf("No matching federated identity record found for presented assertion. Assertion Issuer: '%s'. Assertion Subject: '%s'. Assertion Audience: '%s'.", fc.Iss, fc.Sub, strings.Join(fc.Aud, ","))
	}
	var byIssuer []FederatedCredential
	for _, f := range c.Federated {
		if f.Issuer == fc.Iss {
			byIssuer = append(byIssuer, f)
		}
	}
	if len(byIssuer) == 0 {
		return 700211, fmt.Sprintf("No matching federated identity record found for presented assertion issuer '%s'.%s", fc.Iss, check)
	}
	parts := strings.Split(jwt, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return 50027, "JWT token is invalid or malformed (signature)."
	}
	signed := []byte(parts[0] + "." + parts[1])
	verified := false
	for _, f := range byIssuer {
		for _, k := range f.Keys {
			if verifyJWS(h.Alg, k, signed, sig) == nil {
				verified = true
			}
		}
	}
	if !verified {
		return 700027, fmt.Sprintf("Client assertion failed signature validation: no key of issuer '%s' verifies it (alg %s).", fc.Iss, h.Alg)
	}
	if code, text := s.checkAssertionTimes(cl); code != 0 {
		return code, text
	}
	var byAudience []FederatedCredential
	for _, f := range byIssuer {
		if slices.Contains(fc.Aud, f.audience()) {
			byAudience = append(byAudience, f)
		}
	}
	if len(byAudience) == 0 {
		return 700212, fmt.Sprintf("No matching federated identity record found for presented assertion audience '%s'.%s", strings.Join(fc.Aud, ","), check)
	}
	foldMatch := false
	for _, f := range byAudience {
		if f.Subject == fc.Sub {
			return 0, ""
		}
		foldMatch = foldMatch || strings.EqualFold(f.Subject, fc.Sub)
	}
	if foldMatch {
		return 7002138, fmt.Sprintf("No matching federated identity record found for presented assertion subject '%s'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison.%s", fc.Sub, check)
	}
	return 700213, fmt.Sprintf("No matching federated identity record found for presented assertion subject '%s'.%s", fc.Sub, check)
}

// ReadPublicKeys reads the public keys of a PEM file: PUBLIC KEY blocks
// (PKIX) and the keys of CERTIFICATE blocks.
func ReadPublicKeys(path string) ([]crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var keys []crypto.PublicKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch block.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing a public key in %s: %w", path, err)
			}
			keys = append(keys, k)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing a certificate in %s: %w", path, err)
			}
			keys = append(keys, c.PublicKey)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no PUBLIC KEY or CERTIFICATE block in %s", path)
	}
	return keys, nil
}
