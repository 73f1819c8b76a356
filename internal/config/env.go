package config

import (
	"errors"
	"fmt"
	"strings"
)

// expandEnv replaces ${VAR} and ${VAR:-default} in s with the variable's
// value, and $$ with a literal $. Any other $ is kept as it is, so values such
// as Event Hubs' "$ConnectionString" need no escaping. ${VAR:-default} uses
// the default when VAR is unset or empty; ${VAR} with VAR unset is an error
// (one per such variable, all returned). changed reports whether s held any
// reference at all.
func expandEnv(s string, lookup func(string) (string, bool)) (out string, changed bool, errs []error) {
	if !strings.Contains(s, "$") {
		return s, false, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			changed = true
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				errs = append(errs, errors.New(`unterminated "${" (write $$ for a literal $)`))
				return s, changed, errs
			}
			inner := s[i+2 : i+2+end]
			name, def, hasDef := strings.Cut(inner, ":-")
			if !validEnvName(name) {
				errs = append(errs, fmt.Errorf("invalid variable reference ${%s}: write ${NAME} or ${NAME:-default} (or $$ for a literal $)", inner))
			} else if v, ok := lookup(name); ok && (v != "" || !hasDef) {
				b.WriteString(v)
			} else if hasDef {
				b.WriteString(def)
			} else {
				errs = append(errs, fmt.Errorf("environment variable %s is not set (give a default with ${%s:-default})", name, name))
			}
			i += 2 + end
			changed = true
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), changed, errs
}

// validEnvName reports whether name is a shell variable name.
func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
