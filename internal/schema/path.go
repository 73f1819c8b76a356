package schema

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// metaPath is a parsed "@name" path.
type metaPath struct{ name string }

// parsedPath is either a list of key segments into the event or a metadata
// name.
type parsedPath struct {
	segments []string
	meta     *metaPath
}

// parsePath parses a column's From. Segments are separated by "."; a
// backslash escapes ".", "@" or "\" inside a key ("cpu\.usage" is the key
// "cpu.usage"). A leading "@" reads metadata: @key, @topic, @partition,
// @offset, @timestamp, @headers.NAME (NAME taken literally).
func parsePath(p string) (parsedPath, error) {
	if p == "" {
		return parsedPath{}, errors.New("empty path")
	}
	if p[0] == '@' {
		name := p[1:]
		switch name {
		case "key", "topic", "partition", "offset", "timestamp":
			return parsedPath{meta: &metaPath{name: name}}, nil
		}
		if h, ok := strings.CutPrefix(name, "headers."); ok && h != "" {
			return parsedPath{meta: &metaPath{name: name}}, nil
		}
		return parsedPath{}, fmt.Errorf("unknown metadata %q (want @key, @topic, @partition, @offset, @timestamp or @headers.NAME)", p)
	}
	var segs []string
	var cur strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '\\':
			if i+1 == len(p) {
				return parsedPath{}, fmt.Errorf("path %q ends in a backslash", p)
			}
			next := p[i+1]
			if next != '.' && next != '\\' && next != '@' {
				return parsedPath{}, fmt.Errorf("path %q: backslash must escape '.', '@' or '\\' (at byte %d)", p, i)
			}
			cur.WriteByte(next)
			i++
		case '.':
			if cur.Len() == 0 {
				return parsedPath{}, fmt.Errorf("path %q has an empty segment at byte %d", p, i)
			}
			segs = append(segs, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() == 0 {
		return parsedPath{}, fmt.Errorf("path %q has an empty segment at its end", p)
	}
	return parsedPath{segments: append(segs, cur.String())}, nil
}

// node is one level of the path trie: the walk over an object looks up each
// key among kids and skips the values nobody asked for.
type node struct {
	keys []string
	kids []*node
	// index of each kid when its key is a canonical array index, else -1.
	index []int
	byKey map[string]int // used when there are many kids
	// cols end at this node; sub are all columns at or below it, reset when
	// a duplicate key replaces the value (last key wins, as in encoding/json).
	cols []int
	sub  []int
	// hasIndex: some kid can match an array element.
	hasIndex bool
}

const mapThreshold = 8

func (n *node) add(segs []string, col int) {
	n.sub = append(n.sub, col)
	if len(segs) == 0 {
		n.cols = append(n.cols, col)
		return
	}
	var kid *node
	for i, k := range n.keys {
		if k == segs[0] {
			kid = n.kids[i]
		}
	}
	if kid == nil {
		kid = &node{}
		n.keys = append(n.keys, segs[0])
		n.kids = append(n.kids, kid)
		idx := -1
		if v, err := strconv.Atoi(segs[0]); err == nil && v >= 0 && strconv.Itoa(v) == segs[0] {
			idx = v
			n.hasIndex = true
		}
		n.index = append(n.index, idx)
		if len(n.keys) > mapThreshold {
			n.byKey = make(map[string]int, len(n.keys))
			for i, k := range n.keys {
				n.byKey[k] = i
			}
		}
	}
	kid.add(segs[1:], col)
}

// find returns the kid for an (unescaped) object key, or nil.
func (n *node) find(key []byte) *node {
	if n.byKey != nil {
		if i, ok := n.byKey[string(key)]; ok {
			return n.kids[i]
		}
		return nil
	}
	for i, k := range n.keys {
		if k == string(key) {
			return n.kids[i]
		}
	}
	return nil
}

// at returns the kid for array element i, or nil.
func (n *node) at(i int) *node {
	for j, x := range n.index {
		if x == i {
			return n.kids[j]
		}
	}
	return nil
}
