package config

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// parse decodes and validates data; see Options.Parse.
func parse(data []byte, name string, opts Options) (*Config, error) {
	root, problem := parseDocument(data)
	if problem != nil {
		return nil, &Error{File: name, Problems: []Problem{*problem}}
	}
	cfg := DefaultConfig()
	d := newDecoder(opts)
	d.decode(root, reflect.ValueOf(&cfg).Elem(), "")
	for i := range cfg.Pipelines {
		if cfg.Pipelines[i].DeadLetter.Path == "" && cfg.Pipelines[i].Name != "" {
			cfg.Pipelines[i].DeadLetter.Path = DefaultDeadLetterPath(cfg.Pipelines[i].Name)
		}
	}
	// workload_identity takes what the AKS webhook injects (AZURE_CLIENT_ID
	// and friends) for the keys the file leaves empty.
	cfg.PowerBI = cfg.PowerBI.WithEnvironment(func(n string) string {
		v, _ := opts.LookupEnv(n)
		return v
	})
	problems := d.problems
	// A key whose value could not be decoded already has its problem; what
	// validation says about the default left in its place would mislead.
	undecoded := make(map[string]bool, len(problems))
	for _, p := range problems {
		undecoded[p.Path] = true
	}
	for _, p := range validate(&cfg) {
		if undecoded[p.Path] {
			continue
		}
		p.Line = lineOf(root, p.Path)
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
		return nil, &Error{File: name, Problems: problems}
	}
	return &cfg, nil
}

// yamlLine finds the line in a yaml.v3 syntax error ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlAnchor finds the name in yaml.v3's error for an alias of no anchor.
var yamlAnchor = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

// yamlProblem turns a yaml.v3 syntax error into a problem with its line.
// yaml.v3 names no line for a fault on the first line, for a character
// YAML does not allow, or for an alias of no anchor: their line is found
// in data.
func yamlProblem(data []byte, err error) *Problem {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Problem{Line: line, Msg: "invalid YAML: " + m[2]}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 1
	if m := yamlAnchor.FindStringSubmatch(msg); m != nil {
		if i := bytes.Index(data, []byte("*"+m[1])); i >= 0 {
			line = yamlLineAt(data, i)
		}
	} else if i := disallowedChar(data); i >= 0 {
		line = yamlLineAt(data, i)
	}
	return &Problem{Line: line, Msg: "invalid YAML: " + msg}
}

// yamlLineAt returns the line (1-based) of byte offset off in data,
// counting line breaks as YAML, and so yaml.v3's node lines, do: LF, CR,
// CRLF as one, NEL, LS and PS.
func yamlLineAt(data []byte, off int) int {
	line := 1
	for i := 0; i < off && i < len(data); {
		n := 1
		switch {
		case bytes.HasPrefix(data[i:], []byte("\r\n")):
			n = 2
		case data[i] == '\r', data[i] == '\n':
		case bytes.HasPrefix(data[i:], []byte("\u0085")):
			n = 2
		case bytes.HasPrefix(data[i:], []byte("\u2028")), bytes.HasPrefix(data[i:], []byte("\u2029")):
			n = 3
		default:
			i++
			continue
		}
		line++
		i += n
	}
	return line
}

// disallowedChar returns the offset of the first byte that is not valid
// UTF-8 or starts a character YAML does not allow (YAML 1.2, 5.1: C0 and C1
// controls but tab, line feed, carriage return and NEL; surrogates;
// U+FFFE, U+FFFF), or -1.
func disallowedChar(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1,
			r < 0x20 && r != '\t' && r != '\n' && r != '\r',
			r >= 0x7F && r < 0xA0 && r != 0x85,
			r == 0xFFFE || r == 0xFFFF:
			return i
		}
		i += size
	}
	return -1
}

// parseDocument parses data into the root mapping of its only document.
func parseDocument(data []byte) (*yaml.Node, *Problem) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Problem{Line: 1, Msg: "config is empty: it needs at least powerbi and pipelines"}
		}
		return nil, yamlProblem(data, err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		line := next.Line
		if err != nil {
			line = yamlProblem(data, err).Line
		}
		return nil, &Problem{Line: line, Msg: "a config holds one YAML document; found a second after ---"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root = deref(root); root.Kind != yaml.MappingNode {
		if isNull(root) {
			return nil, &Problem{Line: 1, Msg: "config is empty: it needs at least powerbi and pipelines"}
		}
		return nil, &Problem{Line: root.Line, Msg: "the top level must be a mapping of keys (powerbi, pipelines, ...), got " + describe(root)}
	}
	return root, nil
}

// pathSegment matches one step of a key path: a key, or an index.
var pathSegment = regexp.MustCompile(`^([^.\[\]]+)|^\[(\d+)\]|^\.([^.\[\]]+)`)

// splitPath splits "pipelines[0].batch.max_rows" into
// ["pipelines", "[0]", "batch", "max_rows"]; ok is false when path is not
// made of keys and indexes.
func splitPath(path string) (segs []string, ok bool) {
	for rest := path; rest != ""; {
		m := pathSegment.FindStringSubmatch(rest)
		if m == nil || (len(segs) == 0 && m[3] != "") || (len(segs) > 0 && m[1] != "") {
			return nil, false
		}
		switch {
		case m[1] != "":
			segs = append(segs, m[1])
		case m[2] != "":
			segs = append(segs, "["+m[2]+"]")
		default:
			segs = append(segs, m[3])
		}
		rest = rest[len(m[0]):]
	}
	return segs, len(segs) > 0
}

// lineOf returns the line of the deepest node on path that exists in the
// tree under root: the key's own line when it is set, else the line of the
// key or list item that holds the missing one.
func lineOf(root *yaml.Node, path string) int {
	segs, ok := splitPath(path)
	line := root.Line
	if !ok {
		return line
	}
	cur := root
	for _, seg := range segs {
		cur = deref(cur)
		if strings.HasPrefix(seg, "[") {
			i, _ := strconv.Atoi(seg[1 : len(seg)-1])
			if cur.Kind != yaml.SequenceNode || i >= len(cur.Content) {
				return line
			}
			cur = cur.Content[i]
			line = cur.Line
			continue
		}
		if cur.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for _, p := range mappingPairs(cur) {
			if p.key.Value == seg {
				cur, line, found = p.value, p.key.Line, true
				break
			}
		}
		if !found {
			return line
		}
	}
	return line
}

// hasPath reports whether the relative key path segs names a key that type
// t (a config section) has.
func hasPath(t reflect.Type, segs []string) bool {
	for _, seg := range segs {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if strings.HasPrefix(seg, "[") {
			if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
				return false
			}
			t = t.Elem()
			continue
		}
		switch t.Kind() {
		case reflect.Map:
			t = t.Elem()
		case reflect.Struct:
			info := structInfo{byKey: make(map[string][]int)}
			collectFields(t, nil, &info)
			index, ok := info.byKey[seg]
			if !ok {
				return false
			}
			t = t.FieldByIndex(index).Type
		default:
			return false
		}
	}
	return true
}

// sectionProblems turns the error returned by a section's Validate into
// problems. Joined errors are split; a message that starts with a key path
// of the section ("columns[2].type: unknown type") is put under prefix,
// any other message is about the section as a whole.
func sectionProblems(prefix string, section reflect.Type, err error) []Problem {
	if err == nil {
		return nil
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []Problem
		for _, e := range joined.Unwrap() {
			out = append(out, sectionProblems(prefix, section, e)...)
		}
		return out
	}
	var out []Problem
	for _, msg := range strings.Split(err.Error(), "\n") {
		if msg = strings.TrimSpace(msg); msg == "" {
			continue
		}
		path := prefix
		if head, rest, ok := strings.Cut(msg, ": "); ok {
			if segs, ok := splitPath(head); ok && !strings.ContainsAny(head, " \t") && hasPath(section, segs) {
				path = joinIndexed(prefix, head)
				msg = rest
			}
		}
		out = append(out, Problem{Path: path, Msg: msg})
	}
	return out
}

// joinIndexed joins a prefix and a relative path that may start with an
// index ("[2].name").
func joinIndexed(prefix, rel string) string {
	if strings.HasPrefix(rel, "[") || prefix == "" {
		return prefix + rel
	}
	return prefix + "." + rel
}
