package doctor

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// caFileFix is the fix for a server certificate this host does not trust.
const caFileFix = "the server's TLS certificate is not trusted by this host (this is not a DNS or firewall problem): set powerbi.ca_file to a PEM file with the CA certificate that signed it (a TLS-inspecting proxy's CA, or the emulator's --ca-out file), or install that CA in the system's trust store"

// isTLSError tells whether err comes from verifying a server's certificate.
// MSAL flattens some errors to text, so the text is checked as well.
func isTLSError(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	if errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "x509: ") || strings.Contains(msg, "tls: failed to verify certificate")
}

// managedIdentityEnvs are the variables by which Azure hosts offer a
// managed identity to MSAL, by host.
var managedIdentityEnvs = []struct{ host, vars string }{
	{"App Service, Functions, Container Apps", "IDENTITY_ENDPOINT and IDENTITY_HEADER"},
	{"Azure Arc", "IDENTITY_ENDPOINT and IMDS_ENDPOINT"},
	{"Cloud Shell", "MSI_ENDPOINT"},
	{"Service Fabric", "IDENTITY_ENDPOINT, IDENTITY_HEADER and IDENTITY_SERVER_THUMBPRINT"},
}

// managedIdentityFix says where a managed identity comes from.
func managedIdentityFix() string {
	return "a managed identity comes from the Azure host: on App Service, Functions and Container Apps through IDENTITY_ENDPOINT and IDENTITY_HEADER (turn the identity on for the app), on an Azure VM or scale set through its metadata endpoint (assign the identity to the VM); set managed_identity_client_id (or _resource_id) for a user-assigned identity. On AKS use auth method workload_identity; outside Azure use client_secret or client_certificate"
}

// azureVMAssetTag is the chassis asset tag of Azure virtual machines
// (what cloud-init reads to tell it runs on Azure).
const azureVMAssetTag = "7783-7084-3265-9085"

// managedIdentityEnvironment checks, without any network call, that this
// host offers a managed identity: one of the environment variables Azure
// hosts set, or an Azure VM (whose metadata endpoint then answers).
// Without either, asking for a token would only wait for a metadata
// address that is not there.
func (r *run) managedIdentityEnvironment() (Check, bool) {
	getenv := r.opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	for _, name := range []string{"IDENTITY_ENDPOINT", "MSI_ENDPOINT"} {
		if getenv(name) != "" {
			return Check{}, true
		}
	}
	dmi := r.opts.DMIDir
	if dmi == "" {
		dmi = "/sys/class/dmi/id"
	}
	if tag, err := os.ReadFile(filepath.Join(dmi, "chassis_asset_tag")); err == nil && strings.TrimSpace(string(tag)) == azureVMAssetTag {
		return Check{}, true
	}
	var where []string
	for _, e := range managedIdentityEnvs {
		where = append(where, fmt.Sprintf("%s set %s", e.host, e.vars))
	}
	return Check{Step: "token", Status: Fail,
		Detail: "managed_identity: no managed-identity environment on this host: IDENTITY_ENDPOINT and MSI_ENDPOINT are unset (" + strings.Join(where, "; ") + ") and this is not an Azure VM, so there is no metadata endpoint to ask; no request was made",
		Fix:    managedIdentityFix()}, false
}
