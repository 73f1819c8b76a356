// Package secret holds credentials so that they never print: in logs, errors,
// config dumps and metrics a Value shows as <redacted>.
package secret

import "log/slog"

// Value is a credential read from config. Reveal returns the real text.
type Value string

const redacted = "<redacted>"

// Reveal returns the secret text, for the one place that must send it.
func (v Value) Reveal() string { return string(v) }

// String implements fmt.Stringer.
func (v Value) String() string {
	if v == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer, so %#v redacts too.
func (v Value) GoString() string { return v.String() }

// LogValue implements slog.LogValuer.
func (v Value) LogValue() slog.Value { return slog.StringValue(v.String()) }

// MarshalText implements encoding.TextMarshaler, so JSON and YAML dumps redact.
func (v Value) MarshalText() ([]byte, error) { return []byte(v.String()), nil }
