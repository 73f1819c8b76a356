package config

import (
	"encoding"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/secret"
)

// decoder walks a yaml.Node tree against a Go type, the way yaml.v3's own
// decoder does, but gathers every problem (unknown keys at any depth, wrong
// types, unset variables, unreadable secret files) with its path and line
// instead of stopping at the first. Values are decoded onto whatever the
// target already holds, so defaults survive for keys that are absent.
type decoder struct {
	opts     Options
	problems []Problem
	// expanded marks scalars already expanded: an anchored value is visited
	// once per alias, and must be expanded only once.
	expanded map[*yaml.Node]bool
	// fields caches the yaml keys of each struct type.
	fields map[reflect.Type]structInfo
	// newElem gives the initial value of a list element of a type, for
	// elements that have defaults (pipelines).
	newElem map[reflect.Type]func() reflect.Value
}

// structInfo lists a struct type's yaml keys.
type structInfo struct {
	byKey map[string][]int // key -> field index path (inline structs flattened)
	keys  []string         // in field order, for suggestions
}

func newDecoder(opts Options) *decoder {
	return &decoder{
		opts:     opts,
		expanded: make(map[*yaml.Node]bool),
		fields:   make(map[reflect.Type]structInfo),
		newElem: map[reflect.Type]func() reflect.Value{
			reflect.TypeFor[Pipeline](): func() reflect.Value { return reflect.ValueOf(DefaultPipeline()) },
			reflect.TypeFor[Target]():   func() reflect.Value { return reflect.ValueOf(DefaultTarget()) },
		},
	}
}

func (d *decoder) add(path string, line int, format string, args ...any) {
	d.problems = append(d.problems, Problem{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// decode sets v from n; path names v in messages.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	n = deref(n)
	t := v.Type()
	if implementsUnmarshaler(t) {
		d.expandTree(n, path)
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.add(path, n.Line, "%s", cleanYAMLError(err))
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			v.Set(reflect.Zero(t))
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		if isNull(n) { // "batch:" with nothing under it keeps the defaults
			return
		}
		if n.Kind != yaml.MappingNode {
			d.add(path, n.Line, "must be a mapping of keys, got %s", describe(n))
			return
		}
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if isNull(n) {
			v.Set(reflect.Zero(t))
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.add(path, n.Line, "must be a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if init, ok := d.newElem[t.Elem()]; ok {
				s.Index(i).Set(init())
			}
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map, reflect.Interface:
		d.expandTree(n, path)
		target := reflect.New(t)
		if err := n.Decode(target.Interface()); err != nil {
			d.add(path, n.Line, "%s", cleanYAMLError(err))
			return
		}
		v.Set(target.Elem())
	default:
		d.decodeScalar(n, v, path)
	}
}

// decodeStruct sets the fields of v from mapping n, reporting unknown and
// duplicate keys, then reads the *_file secrets of v.
func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	info := d.structInfo(v.Type())
	lines := make(map[string]int)
	for _, p := range mappingPairs(n) {
		if p.key.Kind != yaml.ScalarNode {
			d.add(path, p.key.Line, "keys must be plain names, got %s", describe(p.key))
			continue
		}
		key := p.key.Value
		keyPath := joinPath(path, key)
		if first, dup := lines[key]; dup {
			d.add(keyPath, p.key.Line, "duplicate key (first set on line %d)", first)
			continue
		}
		lines[key] = p.key.Line
		index, ok := info.byKey[key]
		if !ok && path == "" && strings.HasPrefix(key, "x-") {
			continue // a top-level extension key: a place for YAML anchors
		}
		if !ok {
			d.add(keyPath, p.key.Line, "unknown key%s", suggest(key, info.keys))
			continue
		}
		d.decode(p.value, v.FieldByIndex(index), keyPath)
	}
	d.readSecretFiles(v, path, info, lines)
}

// readSecretFiles fills each secret.Value field K of v whose sibling K_file
// names a file with that file's content, without its trailing newline, and
// clears K_file, so that consumers see one secret. The exceptions are
// powerbi.auth.token_file and client_secret_file, which pushapi re-reads
// when the file changes: they are only checked here.
func (d *decoder) readSecretFiles(v reflect.Value, path string, info structInfo, lines map[string]int) {
	secretType := reflect.TypeFor[secret.Value]()
	for _, key := range info.keys {
		field := v.FieldByIndex(info.byKey[key])
		if field.Type() != secretType {
			continue
		}
		fileIndex, ok := info.byKey[key+"_file"]
		if !ok || v.FieldByIndex(fileIndex).Kind() != reflect.String {
			continue
		}
		file := v.FieldByIndex(fileIndex).String()
		if file == "" {
			continue
		}
		filePath, line := joinPath(path, key+"_file"), lines[key+"_file"]
		if field.String() != "" {
			d.add(filePath, line, "set either %s or %s_file, not both", key, key)
			continue
		}
		data, err := d.opts.ReadFile(file)
		if err != nil {
			d.add(filePath, line, "cannot read the secret: %v", err)
			continue
		}
		text := strings.TrimRight(string(data), "\r\n")
		if text == "" {
			d.add(filePath, line, "file %s is empty", file)
			continue
		}
		if v.Type() == reflect.TypeFor[pushapi.AuthConfig]() && (key == "token" || key == "client_secret") {
			// pushapi re-reads token_file and client_secret_file when they
			// change (a rotated secret without a restart): keep the path.
			continue
		}
		field.SetString(text)
		v.FieldByIndex(fileIndex).SetString("")
	}
}

// decodeScalar sets a string, number, bool or duration from a scalar node.
// A null (an empty value, ~ or null) keeps what v holds: the default.
func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	want := describeType(t)
	if n.Kind != yaml.ScalarNode {
		d.add(path, n.Line, "must be %s, got %s", want, describe(n))
		return
	}
	if !d.expand(n, path, t.Kind() == reflect.String) {
		return
	}
	tag := n.ShortTag()
	if tag == "!!null" {
		return
	}
	bad := func() { d.add(path, n.Line, "must be %s, got %s", want, describe(n)) }
	switch {
	case t == reflect.TypeFor[time.Duration]():
		if tag == "!!int" && n.Value == "0" {
			v.SetInt(0)
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if tag != "!!str" || err != nil {
			bad()
			return
		}
		v.SetInt(int64(dur))
	case t.Kind() == reflect.String:
		v.SetString(n.Value)
	case t.Kind() == reflect.Bool:
		var b bool
		if tag != "!!bool" || n.Decode(&b) != nil {
			bad()
			return
		}
		v.SetBool(b)
	case isInt(t.Kind()):
		var i int64
		if tag != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			bad()
			return
		}
		v.SetInt(i)
	case isUint(t.Kind()):
		var u uint64
		if tag != "!!int" || n.Decode(&u) != nil || v.OverflowUint(u) {
			bad()
			return
		}
		v.SetUint(u)
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		var f float64
		if (tag != "!!int" && tag != "!!float") || n.Decode(&f) != nil || math.IsNaN(f) {
			bad()
			return
		}
		v.SetFloat(f)
	default:
		d.add(path, n.Line, "cannot be set from YAML (type %s)", t)
	}
}

// expand replaces environment references in scalar n once. A value that
// held a reference takes the type of its key: a string key keeps it a
// string, any other key reads it as YAML would a plain value (so
// max_rows: "${ROWS}" is a number). It reports whether n may be decoded.
func (d *decoder) expand(n *yaml.Node, path string, toString bool) bool {
	if d.expanded[n] {
		return true
	}
	d.expanded[n] = true
	out, changed, errs := expandEnv(n.Value, d.opts.LookupEnv)
	for _, err := range errs {
		d.add(path, n.Line, "%v", err)
	}
	if len(errs) > 0 {
		return false
	}
	if !changed {
		return true
	}
	n.Value = out
	if n.Style&yaml.TaggedStyle != 0 {
		return true // an explicit !!tag wins
	}
	if toString {
		n.Tag = "!!str"
	} else {
		n.Tag = ""
		n.Style &^= yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle | yaml.LiteralStyle | yaml.FoldedStyle
	}
	return true
}

// expandTree expands every scalar under n, for values decoded by yaml.v3
// itself (maps, interfaces, custom unmarshalers).
func (d *decoder) expandTree(n *yaml.Node, path string) {
	n = deref(n)
	switch n.Kind {
	case yaml.ScalarNode:
		d.expand(n, path, n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0)
	case yaml.SequenceNode:
		for i, c := range n.Content {
			d.expandTree(c, fmt.Sprintf("%s[%d]", path, i))
		}
	case yaml.MappingNode:
		for _, p := range mappingPairs(n) {
			d.expandTree(p.value, joinPath(path, p.key.Value))
		}
	}
}

// structInfo returns (and caches) the yaml keys of struct type t.
func (d *decoder) structInfo(t reflect.Type) structInfo {
	if info, ok := d.fields[t]; ok {
		return info
	}
	info := structInfo{byKey: make(map[string][]int)}
	collectFields(t, nil, &info)
	d.fields[t] = info
	return info
}

func collectFields(t reflect.Type, prefix []int, info *structInfo) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		index := append(append([]int(nil), prefix...), i)
		if strings.Contains(","+opts+",", ",inline,") && f.Type.Kind() == reflect.Struct {
			collectFields(f.Type, index, info)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		info.byKey[name] = index
		info.keys = append(info.keys, name)
	}
}

// pair is one key and value of a mapping.
type pair struct{ key, value *yaml.Node }

// mappingPairs returns the pairs of mapping n with YAML merge keys (<<)
// applied: explicit keys first, then merged keys they do not override.
func mappingPairs(n *yaml.Node) []pair {
	var pairs, merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			src := deref(v)
			switch src.Kind {
			case yaml.MappingNode:
				merged = append(merged, mappingPairs(src)...)
			case yaml.SequenceNode:
				for _, item := range src.Content {
					if item = deref(item); item.Kind == yaml.MappingNode {
						merged = append(merged, mappingPairs(item)...)
					}
				}
			}
			continue
		}
		pairs = append(pairs, pair{k, v})
	}
	if len(merged) == 0 {
		return pairs
	}
	have := make(map[string]bool, len(pairs))
	for _, p := range pairs {
		have[p.key.Value] = true
	}
	for _, p := range merged {
		if !have[p.key.Value] {
			have[p.key.Value] = true
			pairs = append(pairs, p)
		}
	}
	return pairs
}

// deref follows aliases to the anchored node.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isInt(k reflect.Kind) bool {
	return k >= reflect.Int && k <= reflect.Int64
}

func isUint(k reflect.Kind) bool {
	return k >= reflect.Uint && k <= reflect.Uintptr
}

func implementsUnmarshaler(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(reflect.TypeFor[yaml.Unmarshaler]()) ||
		(t.Kind() != reflect.String && p.Implements(reflect.TypeFor[encoding.TextUnmarshaler]()))
}

// describe says what a node holds, for "got ..." in messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 || len(n.Value) > 60 {
			return "a multi-line or long text"
		}
		return strconv.Quote(n.Value)
	}
	return "an alias"
}

// describeType says what a Go type expects, for "must be ..." in messages.
func describeType(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return `a duration such as "500ms", "30s" or "5m"`
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case isInt(t.Kind()), isUint(t.Kind()):
		return "an integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	}
	return t.String()
}

// cleanYAMLError turns a yaml.v3 error into a message without its "yaml:"
// prefix and line numbers (the Problem carries the line).
func cleanYAMLError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	var parts []string
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(l, "line "); ok {
			if _, after, ok := strings.Cut(rest, ": "); ok {
				l = after
			}
		}
		if l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// joinPath appends key to a dotted path.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest proposes the known key closest to an unknown one, ignoring case,
// '_' and '-' (so maxRows suggests max_rows), or lists the known keys.
func suggest(key string, known []string) string {
	norm := strings.NewReplacer("_", "", "-", "")
	nk := norm.Replace(strings.ToLower(key))
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(nk, norm.Replace(k)); dist < bestDist && dist*2 < len(nk) {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return " (known keys: " + strings.Join(known, ", ") + ")"
	}
	return " (did you mean " + best + "?)"
}

// editDistance is the optimal string alignment distance of a and b: the
// Levenshtein distance with a swap of two neighbouring letters counted as
// one edit, the commonest typo (form for from).
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
