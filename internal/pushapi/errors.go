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

// ErrTableRefused marks (wrapped, with the *APIError) a PostRows refusal
// that is about the table, not its rows: a table that holds as many rows
// as its dataset allows (5,000,000 without a retention policy) refuses
// every row, so splitting the batch to find a bad row would only turn one
// request into thousands. IsRowError is false for it; it is permanent, and
// the pipeline stops on it (nothing is acked or dead-lettered: the events
// come again once rows are deleted or the target changes).
var ErrTableRefused = errors.New("the table refuses every row (Power BI refused it, not a row)")

// isTableRefusal recognises a 400 to PostRows that refuses the table rather
// than a row: the table is full.
func isTableRefusal(ae *APIError) bool {
	if ae.Op != opPostRows || ae.Status != http.StatusBadRequest {
		return false
	}
	m := strings.ToLower(ae.Message)
	return strings.Contains(m, "table") && strings.Contains(m, "maximum") && strings.Contains(m, "rows") && !strings.Contains(m, "rows[")
}

// IsRowError reports whether err says the rows themselves were refused: a
// 400 (a value that does not fit its column, a malformed row) or a 413
// (request too large), but not ErrTableRefused. The caller should split the
// batch to isolate the bad rows; PostRows never splits.
func IsRowError(err error) bool {
	if errors.Is(err, ErrRetriesExhausted) || errors.Is(err, ErrTableRefused) {
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

// errorBody is Power BI's error document in the three forms it uses:
//
//	{"error":{"code":"BadRequest","message":"Bad Request","details":[{"code":"","message":"...","target":"rows"}]}}
//	{"error":{"code":"X","pbi.error":{"code":"X","parameters":{},"details":[{"code":"...","detail":{"type":1,"value":"..."}}],"exceptionCulprit":1}}}
//	{"message":"You have exceeded the amount of requests allowed in the current time frame and further requests will fail. Retry in 3392 seconds."}
//
// The last is what the per-user throttling of the REST API answers.
type errorBody struct {
	Error struct {
		Code     string        `json:"code"`
		Message  string        `json:"message"`
		Details  []errorDetail `json:"details"`
		PBIError *struct {
			Code    string        `json:"code"`
			Message string        `json:"message"`
			Details []errorDetail `json:"details"`
		} `json:"pbi.error"`
	} `json:"error"`
	Message string `json:"message"`
}

// errorDetail is one entry of details, in the plain form (message, target)
// or the pbi.error form (code, detail.value).
type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Target  string `json:"target"`
	Detail  *struct {
		Value json.RawMessage `json:"value"`
	} `json:"detail"`
}

// text is what a detail says, for people: "target: message", or for the
// pbi.error form "code: value".
func (d errorDetail) text() string {
	msg := d.Message
	if msg == "" && d.Detail != nil && len(d.Detail.Value) > 0 {
		if err := json.Unmarshal(d.Detail.Value, &msg); err != nil {
			msg = string(d.Detail.Value) // a number or another JSON value, as sent
		}
	}
	label := d.Target
	if label == "" && d.Message == "" {
		label = d.Code
	}
	switch {
	case msg == "":
		return label
	case label == "":
		return msg
	}
	return label + ": " + msg
}

// joinMessage appends the details' texts to msg, separated by "; ".
func joinMessage(msg string, details []errorDetail) string {
	for _, d := range details {
		part := d.text()
		if part == "" {
			continue
		}
		if msg != "" {
			msg += "; "
		}
		msg += part
	}
	return msg
}

// newAPIError builds an APIError from a response status, headers and body.
func newAPIError(op string, status int, h http.Header, body []byte) *APIError {
	e := &APIError{Op: op, Status: status, RequestID: h.Get("RequestId")}
	var eb errorBody
	if len(body) > 0 && json.Unmarshal(body, &eb) == nil {
		e.Code = eb.Error.Code
		msg := joinMessage(eb.Error.Message, eb.Error.Details)
		if pe := eb.Error.PBIError; pe != nil {
			if e.Code == "" {
				e.Code = pe.Code
			}
			msg = joinMessage(joinMessage(msg, []errorDetail{{Message: pe.Message}}), pe.Details)
		}
		if msg == "" {
			msg = eb.Message
		}
		e.Message = msg
	}
	if e.Message == "" && e.Code == "" && len(body) > 0 {
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

// throttlesIdentity reports whether a 429 throttles the caller's identity
// rather than one dataset: Power BI's per-dataset quotas answer with a
// message about "this dataset" (or the table, or the requests pending for
// it); the REST API's per-user throttling answers with a bare
// {"message":...} that names neither (and may ask for an hour). Anything
// that does not say it is about the dataset is taken for the identity, so
// that pushd stops writing to every dataset rather than prolong the
// throttling.
func throttlesIdentity(ae *APIError) bool {
	if ae.Op != opPostRows {
		return true
	}
	m := strings.ToLower(ae.Message)
	return !strings.Contains(m, "dataset") && !strings.Contains(m, "table")
}
