package schema

import (
	"fmt"
	"strconv"
)

// kind is the JSON kind of a value found at a column's path.
type kind uint8

const (
	kMissing kind = iota
	kNull
	kFalse
	kTrue
	kNumber
	kString
	kObject
	kArray
	kTime        // metadata time.Time, in ms
	kUnsupported // metadata of a type schema cannot read
)

func (k kind) String() string {
	switch k {
	case kMissing:
		return "missing"
	case kNull:
		return "null"
	case kFalse, kTrue:
		return "boolean"
	case kNumber:
		return "number"
	case kString:
		return "string"
	case kObject:
		return "object"
	case kArray:
		return "array"
	case kTime:
		return "time"
	}
	return "unsupported value"
}

// val is a value found for a column. It points into the event (or into the
// per-call metadata buffer); nothing is copied until the row is written.
type val struct {
	kind kind
	// esc: the string holds backslash escapes; high: bytes >= 0x80. A string
	// with neither can be copied to the row as it is.
	esc, high bool
	// text is a number's literal, a string's contents between the quotes
	// (still escaped), or an object's or array's whole text.
	text []byte
	ms   int64 // kTime
}

// maxDepth bounds nesting, as encoding/json does.
const maxDepth = 10000

// syntaxError is a JSON syntax error at a byte offset.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%s at byte %d", e.msg, e.off) }

// scanner walks one event, validating all of it and recording the values at
// the configured paths.
type scanner struct {
	data  []byte
	pos   int
	depth int
	vals  []val
	key   []byte // unescaped key scratch
}

func (s *scanner) fail(msg string) error { return &syntaxError{off: s.pos, msg: msg} }

func (s *scanner) unexpected() error {
	if s.pos >= len(s.data) {
		return s.fail("unexpected end of JSON")
	}
	return s.fail("invalid character " + strconv.QuoteRune(rune(s.data[s.pos])))
}

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value scans the value at s.pos (whitespace already skipped). n is the trie
// node for this position or nil when no column reads inside it.
func (s *scanner) value(n *node) error {
	if n != nil {
		for _, c := range n.sub {
			s.vals[c] = val{}
		}
	}
	if s.pos >= len(s.data) {
		return s.unexpected()
	}
	start := s.pos
	var v val
	switch c := s.data[s.pos]; {
	case c == '"':
		s.pos++
		esc, high, err := s.str()
		if err != nil {
			return err
		}
		v = val{kind: kString, esc: esc, high: high, text: s.data[start+1 : s.pos-1]}
	case c == '{':
		if err := s.object(n); err != nil {
			return err
		}
		v = val{kind: kObject, text: s.data[start:s.pos]}
	case c == '[':
		if err := s.array(n); err != nil {
			return err
		}
		v = val{kind: kArray, text: s.data[start:s.pos]}
	case c == '-' || (c >= '0' && c <= '9'):
		if err := s.number(); err != nil {
			return err
		}
		v = val{kind: kNumber, text: s.data[start:s.pos]}
	case c == 't':
		if err := s.literal("true"); err != nil {
			return err
		}
		v = val{kind: kTrue}
	case c == 'f':
		if err := s.literal("false"); err != nil {
			return err
		}
		v = val{kind: kFalse}
	case c == 'n':
		if err := s.literal("null"); err != nil {
			return err
		}
		v = val{kind: kNull}
	default:
		return s.unexpected()
	}
	if n != nil {
		for _, c := range n.cols {
			s.vals[c] = v
		}
	}
	return nil
}

func (s *scanner) literal(lit string) error {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		for i := 0; i < len(lit); i++ {
			if s.pos >= len(s.data) || s.data[s.pos] != lit[i] {
				return s.unexpected()
			}
			s.pos++
		}
	}
	s.pos += len(lit)
	return nil
}

// str scans a string's contents; s.pos is just after the opening quote and
// ends just after the closing one.
func (s *scanner) str() (esc, high bool, err error) {
	d := s.data
	i := s.pos
	for i < len(d) {
		c := d[i]
		switch {
		case c == '"':
			s.pos = i + 1
			return esc, high, nil
		case c == '\\':
			esc = true
			if i+1 >= len(d) {
				s.pos = len(d)
				return false, false, s.unexpected()
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(d) || !isHex(d[i+2]) || !isHex(d[i+3]) || !isHex(d[i+4]) || !isHex(d[i+5]) {
					s.pos = i
					return false, false, s.fail("invalid \\u escape in string")
				}
				i += 6
			default:
				s.pos = i
				return false, false, s.fail("invalid escape in string")
			}
		case c < 0x20:
			s.pos = i
			return false, false, s.fail("control character in string")
		default:
			if c >= 0x80 {
				high = true
			}
			i++
		}
	}
	s.pos = i
	return false, false, s.unexpected()
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number scans a JSON number.
func (s *scanner) number() error {
	d := s.data
	i := s.pos
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	default:
		s.pos = i
		return s.unexpected()
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || !isDigit(d[i]) {
			s.pos = i
			return s.unexpected()
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || !isDigit(d[i]) {
			s.pos = i
			return s.unexpected()
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	s.pos = i
	return nil
}

// object scans an object; s.pos is at '{'.
func (s *scanner) object(n *node) error {
	s.pos++
	if s.depth++; s.depth > maxDepth {
		return s.fail("JSON nested too deeply")
	}
	walk := n != nil && len(n.kids) > 0
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.unexpected()
		}
		s.pos++
		kstart := s.pos
		esc, _, err := s.str()
		if err != nil {
			return err
		}
		var kid *node
		if walk {
			key := s.data[kstart : s.pos-1]
			if esc {
				s.key = unescape(s.key[:0], key)
				key = s.key
			}
			kid = n.find(key)
		}
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.unexpected()
		}
		s.pos++
		s.ws()
		if err := s.value(kid); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.data) {
			return s.unexpected()
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.ws()
		case '}':
			s.pos++
			s.depth--
			return nil
		default:
			return s.unexpected()
		}
	}
}

// array scans an array; s.pos is at '['.
func (s *scanner) array(n *node) error {
	s.pos++
	if s.depth++; s.depth > maxDepth {
		return s.fail("JSON nested too deeply")
	}
	walk := n != nil && n.hasIndex
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		s.depth--
		return nil
	}
	for i := 0; ; i++ {
		var kid *node
		if walk {
			kid = n.at(i)
		}
		if err := s.value(kid); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.data) {
			return s.unexpected()
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.ws()
		case ']':
			s.pos++
			s.depth--
			return nil
		default:
			return s.unexpected()
		}
	}
}
