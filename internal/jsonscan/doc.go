package jsonscan

import (
	"math"
	"strings"
	"sync"
	"unicode/utf8"
)

// Doc is one JSON document read in place, with an index that lookups build as they go: the first lookup that walks
// into an object or array scans it once and keeps where each member or element starts and ends, so that any later
// lookup through it costs a slice access (or, in a large object, a map access) per segment, whatever the
// document's size. However many placeholders read a response, it is scanned at most once (README "Limits and
// guarantees", CPU). The index is a tree: each member that a lookup walked into holds the index of its own value.
//
// A Doc is safe for concurrent use. Its index is kept as long as the Doc; charge, when set, is told the bytes each
// part of the index is about to take, and a non-nil error from it fails the lookup that needed that part. The
// zero Doc is an empty document; Reset gives it one.
type Doc struct {
	mu     sync.Mutex
	b      []byte
	charge func(n int64) error
	top    member // the whole document; end < 0 until it is known
	// index holds every indexed container's members, each container's a run of them (see member.kids), so that a
	// document's index grows in one slice rather than one allocation per container.
	index []member
	// byName finds a member of a large object by its unescaped name (the first member wins), by the object's run
	// in index; built on first use.
	byName map[int32]map[string]int32
}

// member is where one value is, b[start:end], and, for a member of an object, its name b[nameStart:nameEnd]
// (without quotes). When a lookup walked into the value (an object or array), its members are index[kids-1:]
// (kids is 0 until then), count of them.
type member struct {
	start, end         int32
	nameStart, nameEnd int32
	kids, count        int32
	escaped            bool // the name holds escapes
}

// byNameAfter is the member count from which an object's members are looked up in a map rather than one by one.
const byNameAfter = 16

// NewDoc returns a Doc over b, which must not change while the Doc is in use. charge may be nil.
func NewDoc(b []byte, charge func(n int64) error) *Doc {
	d := &Doc{}
	d.Reset(b, charge)
	return d
}

// Reset makes d a Doc over b, with no index yet. It must not be called while d is in use.
func (d *Doc) Reset(b []byte, charge func(n int64) error) {
	*d = Doc{b: b, charge: charge, top: member{end: -1}}
}

// LookupError is a lookup that found nothing, and why. The segments walked before the failure are
// path[:Walked-1] (Walked is 0 when it failed at the top).
type LookupError struct {
	Reason Reason
	Seg    string // the segment that could not be taken
	Walked int
	Length int  // ReasonOutOfRange: the array's length
	Kind   byte // ReasonNotContainer: the kind of the value ('"', '0', 't', 'f', 'n')
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

var errMalformed = &LookupError{Reason: ReasonMalformed}

// Lookup returns the raw JSON value that path names: segments separated by '.', each an object member or, on an
// array, an index; "" is the whole document. Duplicate member names are tolerated (the first one wins), as is
// anything after the top value.
func (d *Doc) Lookup(path string) ([]byte, error) {
	if len(d.b) > math.MaxInt32 {
		return nil, errMalformed
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.root(); err != nil {
		return nil, err
	}
	pos := -1   // the value walked to: d.top, then members of d.index
	walked := 0 // bytes of path walked, for messages
	for depth := 0; path != ""; depth++ {
		seg, rest, _ := strings.Cut(path, ".")
		cur := d.at(pos)
		c := d.b[cur.start]
		if c != '{' && c != '[' {
			return nil, &LookupError{Reason: ReasonNotContainer, Seg: seg, Walked: walked, Kind: kindOf(c)}
		}
		if cur.kids == 0 {
			if err := d.scan(pos, depth); err != nil {
				return nil, err
			}
			cur = d.at(pos) // scanning may have moved d.index
		}
		k, lerr := d.find(cur, c, seg)
		if lerr != nil {
			lerr.Walked = walked
			return nil, lerr
		}
		pos = int(cur.kids) - 1 + k
		walked += len(seg) + 1
		path = rest
	}
	cur := d.at(pos)
	return d.b[cur.start:cur.end], nil
}

// at is the value at pos: the top value for -1, else a member of d.index.
func (d *Doc) at(pos int) *member {
	if pos < 0 {
		return &d.top
	}
	return &d.index[pos]
}

// root makes d.top the top value, checked. d.mu is held.
func (d *Doc) root() error {
	if d.top.end >= 0 {
		return nil
	}
	start := SkipSpace(d.b, 0)
	if start >= len(d.b) {
		return &LookupError{Reason: ReasonEmpty}
	}
	d.top = member{start: int32(start)}
	switch d.b[start] {
	case '{', '[':
		if err := d.scan(-1, 0); err != nil {
			d.top.end = -1
			return err
		}
		// The container's run ends with a member recording its end (see scan).
		d.top.end = d.index[int(d.top.kids)-1+int(d.top.count)].end
	default:
		end, ok := Skip(d.b, start, 0)
		if !ok {
			d.top.end = -1
			return errMalformed
		}
		d.top.end = int32(end)
	}
	return nil
}

// scan indexes the container that the member at position pos (as position gives it) holds: it appends the
// container's members to d.index, then one more member recording where the container ends, and points the member
// at the run. depth is the number of containers around the container.
func (d *Doc) scan(pos, depth int) error {
	if depth >= MaxDepth {
		return errMalformed
	}
	at := int(d.at(pos).start)
	b, obj := d.b, d.b[at] == '{'
	closer := byte(']')
	if obj {
		closer = '}'
	}
	first, before := len(d.index), cap(d.index)
	if d.index == nil {
		d.index = make([]member, 0, 8) // a small response's few containers, in one allocation
	}
	i := SkipSpace(b, at+1)
	if i >= len(b) || b[i] != closer {
		for {
			var m member
			if obj {
				if i >= len(b) || b[i] != '"' {
					return d.undo(first, errMalformed)
				}
				end, escaped, ok := ScanString(b, i)
				if !ok {
					return d.undo(first, errMalformed)
				}
				m.nameStart, m.nameEnd, m.escaped = int32(i+1), int32(end-1), escaped
				if i = SkipSpace(b, end); i >= len(b) || b[i] != ':' {
					return d.undo(first, errMalformed)
				}
				i = SkipSpace(b, i+1)
			}
			end, ok := Skip(b, i, depth+1)
			if !ok {
				return d.undo(first, errMalformed)
			}
			m.start, m.end = int32(i), int32(end)
			d.index = append(d.index, m)
			if i = SkipSpace(b, end); i >= len(b) {
				return d.undo(first, errMalformed)
			}
			if b[i] == ',' {
				i = SkipSpace(b, i+1)
				continue
			}
			if b[i] != closer {
				return d.undo(first, errMalformed)
			}
			break
		}
	}
	d.index = append(d.index, member{start: int32(i + 1), end: int32(i + 1)})
	if d.charge != nil && cap(d.index) > before {
		if err := d.charge(int64(memberSize * (cap(d.index) - before))); err != nil {
			return d.undo(first, &LookupError{Reason: ReasonCharge, Err: err})
		}
	}
	m := d.at(pos)
	m.kids, m.count = int32(first+1), int32(len(d.index)-first-1)
	return nil
}

// memberSize is the bytes a member takes in the index, as charged.
const memberSize = 32

// undo drops what a failed scan appended, and returns err.
func (d *Doc) undo(first int, err error) error {
	d.index = d.index[:first]
	return err
}

// find returns the position in m's run of segment seg, c being the container's opening bracket.
func (d *Doc) find(m *member, c byte, seg string) (int, *LookupError) {
	members := d.index[int(m.kids)-1 : int(m.kids)-1+int(m.count)]
	if c == '[' {
		k, ok := ArrayIndex(seg)
		if !ok {
			return 0, &LookupError{Reason: ReasonNotIndex, Seg: seg}
		}
		if k >= len(members) {
			return 0, &LookupError{Reason: ReasonOutOfRange, Seg: seg, Length: len(members)}
		}
		return k, nil
	}
	if len(members) < byNameAfter {
		for k, mm := range members {
			if NameIs(d.b[mm.nameStart:mm.nameEnd], mm.escaped, seg) {
				return k, nil
			}
		}
		return 0, &LookupError{Reason: ReasonNoMember, Seg: seg}
	}
	names, ok := d.byName[m.kids]
	if !ok {
		var err *LookupError
		if names, err = d.mapNames(members); err != nil {
			return 0, err
		}
		if d.byName == nil {
			d.byName = make(map[int32]map[string]int32)
		}
		d.byName[m.kids] = names
	}
	if k, ok := names[seg]; ok {
		return int(k), nil
	}
	return 0, &LookupError{Reason: ReasonNoMember, Seg: seg}
}

// mapNames builds a large object's name map: unescaped names, the first member of each name, a name that does not
// unescape to valid UTF-8 left out (it matches nothing).
func (d *Doc) mapNames(members []member) (map[string]int32, *LookupError) {
	if d.charge != nil {
		size := int64(48 * len(members))
		for _, m := range members {
			size += int64(m.nameEnd - m.nameStart)
		}
		if err := d.charge(size); err != nil {
			return nil, &LookupError{Reason: ReasonCharge, Err: err}
		}
	}
	byName := make(map[string]int32, len(members))
	for k, m := range members {
		s, ok := unquoteName(d.b[m.nameStart:m.nameEnd], m.escaped)
		if !ok {
			continue
		}
		if _, dup := byName[s]; !dup {
			byName[s] = int32(k)
		}
	}
	return byName, nil
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

// kindOf names the kind of a value that starts with c, as jsontext.Kind does.
func kindOf(c byte) byte {
	if c == '-' || '0' <= c && c <= '9' {
		return '0'
	}
	return c
}
