package pushapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// APIError is a Power BI answer that is not a success and will not become
// one by retrying the same request (or one that stayed retryable until the
// retry budget ran out; then it is wrapped with ErrRetriesExhausted).
type APIError struct {
	// Op is the operation, e.g. "PostRows" or "GetTables".
	Op string
	// Status is the HTTP status code.
	Status int
	// Code is Power BI's error code, e.g. "BadRequest", "ItemNotFound",
	// "TokenExpired" or "PowerBINotAuthorizedException"; empty when the
	// body carried none.
	Code string
	// Message is Power BI's message, with the details' messages appended.
	Message string
	// RequestID is the RequestId response header, for Microsoft support.
	RequestID string
}

// Error implements error.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "power bi %s: HTTP %d", e.Op, e.Status)
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RequestID != "" {
		b.WriteString(" (request id ")
		b.WriteString(e.RequestID)
		b.WriteString(")")
	}
	return b.String()
}

// ErrRetriesExhausted marks an error that was retryable but outlasted
// RetryConfig.MaxElapsed; the last failure is wrapped with it.
var ErrRetriesExhausted = errors.New("retry budget exhausted")

// ErrNotFound is returned (wrapped) by FindDatasetByName when no dataset has
// the name.
var ErrNotFound = errors.New("not found")

// IsRowError reports whether err says the rows themselves were refused: a
// 400 (a value that does not fit its column, a malformed row) or a 413
// (request too large). The caller should split the batch to isolate the bad
// rows; PostRows never splits.
func IsRowError(err error) bool {
	if errors.Is(err, ErrRetriesExhausted) {
		return false
	}
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	return ae.Op == opPostRows && (ae.Status == http.StatusBadRequest || ae.Status == http.StatusRequestEntityTooLarge)
}

// IsPermanent reports whether sending the same rows again cannot succeed, so
// they belong in the dead letter (after splitting when IsRowError): any
// APIError, an exhausted retry budget, or a request that cannot be built or
// trusted (TLS verification). Context cancellation is not permanent: the rows
// were not delivered and must come again after a restart.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrRetriesExhausted) {
		return true
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *permanentError
	return errors.As(err, &pe)
}

// permanentError marks a failure that retrying cannot fix (a bad URL, an
// untrusted certificate).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// retryableStatus reports whether an HTTP status is worth another try.
func retryableStatus(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500
}

// isPermanentTransportError recognises transport failures that no retry can
// fix; everything else (resets, EOF, timeouts, refused connections) is an
// outage and retried.
func isPermanentTransportError(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify) {
		return true
	}
	return strings.Contains(err.Error(), "unsupported protocol scheme")
}

// errorBody is Power BI's error document in its two known forms.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Target  string `json:"target"`
		} `json:"details"`
		PBIError *struct {
			Code string `json:"code"`
		} `json:"pbi.error"`
	} `json:"error"`
}

// newAPIError builds an APIError from a response status, headers and body.
func newAPIError(op string, status int, h http.Header, body []byte) *APIError {
	e := &APIError{Op: op, Status: status, RequestID: h.Get("RequestId")}
	var eb errorBody
	if len(body) > 0 && json.Unmarshal(body, &eb) == nil {
		e.Code = eb.Error.Code
		if e.Code == "" && eb.Error.PBIError != nil {
			e.Code = eb.Error.PBIError.Code
		}
		msg := eb.Error.Message
		for _, d := range eb.Error.Details {
			part := d.Message
			if d.Target != "" {
				part = d.Target + ": " + part
			}
			if part == "" {
				continue
			}
			if msg != "" {
				msg += "; "
			}
			msg += part
		}
		e.Message = msg
	} else if len(body) > 0 {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 512 {
			e.Message = e.Message[:512] + "…"
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}
