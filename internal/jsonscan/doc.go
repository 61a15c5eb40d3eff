package jsonscan

import (
	"math"
	"strings"
	"sync"
	"unicode/utf8"
)

// Doc is one JSON document read in place, with an index that lookups build as they go: the first lookup that walks
// into an object or array scans it once and keeps where each member or element starts and ends, so that any later
// lookup through it costs a slice or map access per segment, whatever the document's size. However many
// placeholders read a response, it is scanned at most once (CONTRACT.md §10, CPU).
//
// A Doc is safe for concurrent use. Its index is kept as long as the Doc; charge, when set, is told the bytes each
// part of the index is about to take, and a non-nil error from it fails the lookup that needed that part.
type Doc struct {
	b      []byte
	charge func(n int64) error

	mu    sync.Mutex
	root  span            // the top value; end < 0 until known
	nodes map[int32]*node // by the offset of the container's opening bracket
}

// span is where a value is: b[start:end].
type span struct{ start, end int32 }

// node is the index of one object or array.
type node struct {
	vals  []span // element values, or member values in document order
	names []name // objects: member names, parallel to vals
	// byName finds a member of a large object by its unescaped name (the first member wins); built on first use.
	byName map[string]int32
}

// name is where a member name's content is (without quotes), and whether it holds escapes.
type name struct {
	start, end int32
	escaped    bool
}

// byNameAfter is the member count from which an object's members are looked up in a map rather than one by one.
const byNameAfter = 16

// NewDoc returns a Doc over b, which must not change while the Doc is in use. charge may be nil.
func NewDoc(b []byte, charge func(n int64) error) *Doc {
	return &Doc{b: b, charge: charge, root: span{end: -1}}
}

// Bytes returns the document.
func (d *Doc) Bytes() []byte { return d.b }

// LookupError is a lookup that found nothing, and why. The segments walked before the failure are
// path[:Walked-1] (Walked is 0 when it failed at the top).
type LookupError struct {
	Reason Reason
	Seg    string // the segment that could not be taken
	Walked int
	Length int  // ReasonOutOfRange: the array's length
	Kind   byte // ReasonNotContainer: the kind of the value ('"', '0', 't', 'f', 'n', or '}' / ']' for a misplaced bracket)
	Err    error
}

// Reason classifies a LookupError.
type Reason uint8

const (
	ReasonEmpty        Reason = iota + 1 // the document is empty
	ReasonMalformed                      // the document is not valid JSON where the lookup had to read it
	ReasonNoMember                       // an object has no member Seg
	ReasonNotIndex                       // Seg is not an array index
	ReasonOutOfRange                     // an array has no element Seg
	ReasonNotContainer                   // Seg cannot be taken of a scalar
	ReasonCharge                         // the index could not be charged (Err)
)

func (e *LookupError) Error() string {
	switch e.Reason {
	case ReasonEmpty:
		return "empty document"
	case ReasonMalformed:
		return "not valid JSON"
	case ReasonNoMember:
		return "no member " + e.Seg
	case ReasonNotIndex:
		return e.Seg + " is not an array index"
	case ReasonOutOfRange:
		return "index " + e.Seg + " out of range"
	case ReasonNotContainer:
		return "cannot take " + e.Seg + " of a scalar"
	}
	return "index not charged: " + e.Err.Error()
}

func (e *LookupError) Unwrap() error { return e.Err }

// Lookup returns the raw JSON value that path names: segments separated by '.', each an object member or, on an
// array, an index; "" is the whole document. Duplicate member names are tolerated (the first one wins), as is
// anything after the top value.
func (d *Doc) Lookup(path string) ([]byte, error) {
	if len(d.b) > math.MaxInt32 {
		return nil, &LookupError{Reason: ReasonMalformed}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, err := d.top()
	if err != nil {
		return nil, err
	}
	walked := 0 // bytes of path walked, for messages
	for depth := 0; path != ""; depth++ {
		seg, rest, _ := strings.Cut(path, ".")
		switch c := d.b[cur.start]; c {
		case '{', '[':
			n, err := d.index(cur.start, depth)
			if err != nil {
				return nil, err
			}
			k, lerr := d.find(n, c, seg)
			if lerr != nil {
				lerr.Walked = walked
				return nil, lerr
			}
			cur = n.vals[k]
		default:
			k := kindOf(c)
			if k == 0 {
				return nil, &LookupError{Reason: ReasonMalformed}
			}
			return nil, &LookupError{Reason: ReasonNotContainer, Seg: seg, Walked: walked, Kind: k}
		}
		walked += len(seg) + 1
		path = rest
	}
	return d.b[cur.start:cur.end], nil
}

// top returns the span of the top value, checked. d.mu is held.
func (d *Doc) top() (span, error) {
	if d.root.end >= 0 {
		return d.root, nil
	}
	start := SkipSpace(d.b, 0)
	if start >= len(d.b) {
		return span{}, &LookupError{Reason: ReasonEmpty}
	}
	var end int
	switch d.b[start] {
	case '{', '[':
		n, err := d.index(int32(start), 0)
		if err != nil {
			return span{}, err
		}
		end = int(n.end())
	default:
		var ok bool
		if end, ok = Skip(d.b, start, 0); !ok {
			return span{}, &LookupError{Reason: ReasonMalformed}
		}
	}
	d.root = span{int32(start), int32(end)}
	return d.root, nil
}

// end is where the container a node indexes ends: its last value's end is followed by the closing bracket, which
// index checked; an empty container's end is stored as its only span.
func (n *node) end() int32 { return n.vals[len(n.vals)-1].end }

// index returns the index of the container whose opening bracket is at b[at], scanning it once. depth is the
// number of containers around it. An empty container's node has one span, for its end, and no members.
func (d *Doc) index(at int32, depth int) (*node, error) {
	if n, ok := d.nodes[at]; ok {
		return n, nil
	}
	bad := &LookupError{Reason: ReasonMalformed}
	if depth >= MaxDepth {
		return nil, bad
	}
	b, obj := d.b, d.b[at] == '{'
	closer := byte(']')
	if obj {
		closer = '}'
	}
	n := &node{}
	i := SkipSpace(b, int(at)+1)
	if i < len(b) && b[i] == closer {
		n.vals = []span{{start: int32(i + 1), end: int32(i + 1)}}
		return d.keep(at, n)
	}
	for {
		if obj {
			if i >= len(b) || b[i] != '"' {
				return nil, bad
			}
			end, escaped, ok := ScanString(b, i)
			if !ok {
				return nil, bad
			}
			n.names = append(n.names, name{int32(i + 1), int32(end - 1), escaped})
			if i = SkipSpace(b, end); i >= len(b) || b[i] != ':' {
				return nil, bad
			}
			i = SkipSpace(b, i+1)
		}
		end, ok := Skip(b, i, depth+1)
		if !ok {
			return nil, bad
		}
		n.vals = append(n.vals, span{int32(i), int32(end)})
		if i = SkipSpace(b, end); i >= len(b) {
			return nil, bad
		}
		switch b[i] {
		case ',':
			i = SkipSpace(b, i+1)
			continue
		case closer:
		default:
			return nil, bad
		}
		break
	}
	// The container ends after its closing bracket: record it past the last value, where end() reads it.
	n.vals = append(n.vals, span{int32(i + 1), int32(i + 1)})
	return d.keep(at, n)
}

// keep charges and stores a new node. The node's last span marks the container's end; members are the others.
func (d *Doc) keep(at int32, n *node) (*node, error) {
	size := int64(64 + 8*cap(n.vals) + 12*cap(n.names))
	if d.charge != nil {
		if err := d.charge(size); err != nil {
			return nil, &LookupError{Reason: ReasonCharge, Err: err}
		}
	}
	if d.nodes == nil {
		d.nodes = make(map[int32]*node)
	}
	d.nodes[at] = n
	return n, nil
}

// members is the number of members or elements a node indexes (its last span marks the end).
func (n *node) members() int { return len(n.vals) - 1 }

// find returns the position in n of segment seg, c being the container's opening bracket.
func (d *Doc) find(n *node, c byte, seg string) (int, *LookupError) {
	if c == '[' {
		k, ok := ArrayIndex(seg)
		if !ok {
			return 0, &LookupError{Reason: ReasonNotIndex, Seg: seg}
		}
		if k >= n.members() {
			return 0, &LookupError{Reason: ReasonOutOfRange, Seg: seg, Length: n.members()}
		}
		return k, nil
	}
	if n.members() < byNameAfter {
		for k, nm := range n.names {
			if NameIs(d.b[nm.start:nm.end], nm.escaped, seg) {
				return k, nil
			}
		}
		return 0, &LookupError{Reason: ReasonNoMember, Seg: seg}
	}
	if n.byName == nil {
		if err := d.mapNames(n); err != nil {
			return 0, err
		}
	}
	if k, ok := n.byName[seg]; ok {
		return int(k), nil
	}
	return 0, &LookupError{Reason: ReasonNoMember, Seg: seg}
}

// mapNames builds a large object's name map: unescaped names, the first member of each name, a name that does not
// unescape to valid UTF-8 left out (it matches nothing).
func (d *Doc) mapNames(n *node) *LookupError {
	size := int64(48 * len(n.names))
	for _, nm := range n.names {
		size += int64(nm.end - nm.start)
	}
	if d.charge != nil {
		if err := d.charge(size); err != nil {
			return &LookupError{Reason: ReasonCharge, Err: err}
		}
	}
	m := make(map[string]int32, len(n.names))
	for k, nm := range n.names {
		s, ok := unquoteName(d.b[nm.start:nm.end], nm.escaped)
		if !ok {
			continue
		}
		if _, dup := m[s]; !dup {
			m[s] = int32(k)
		}
	}
	n.byName = m
	return nil
}

// unquoteName unescapes a name's content; false when it holds a lone surrogate.
func unquoteName(raw []byte, escaped bool) (string, bool) {
	if !escaped {
		return string(raw), true
	}
	out := make([]byte, 0, len(raw))
	for j := 0; j < len(raw); {
		if raw[j] != '\\' {
			out = append(out, raw[j])
			j++
			continue
		}
		r, n, ok := unescape(raw, j)
		if !ok {
			return "", false
		}
		out = utf8.AppendRune(out, r)
		j += n
	}
	return string(out), true
}

// kindOf names the kind of value that starts with c, as jsontext.Kind does.
func kindOf(c byte) byte {
	switch {
	case c == '-' || '0' <= c && c <= '9':
		return '0'
	case c == '"', c == 't', c == 'f', c == 'n', c == '}', c == ']':
		return c
	}
	return 0
}
