// Package pushapi is pushd's Power BI client: it obtains tokens through MSAL
// (service principal with a secret or certificate, managed identity, or a
// static token), keeps each dataset under Power BI's push quotas with one
// limiter per dataset, posts rows with retries that honour Retry-After, and
// classifies what cannot be retried.
//
// The package starts no goroutines: every wait happens in the caller's
// goroutine, in a select with the caller's context.
package pushapi
