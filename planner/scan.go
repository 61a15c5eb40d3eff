package planner

import (
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// walker finds a referenced value in a step's response. It scans the response bytes in place and allocates nothing
// unless a skipped value nests deeper than 64 levels; one walker serves every placeholder of one resolution.
//
// The scan validates exactly what a jsontext.Decoder (duplicate names and invalid UTF-8 allowed) would read walking
// the same path, and fails the same way: the containers on the path up to the member or element it needs, every
// value it skips on the way, and the value it returns. What follows that value is not looked at. lookup_ref_test.go
// keeps that decoder walk and FuzzLookupEquivalence holds the two to the same answers.
type walker struct {
	deep []uint64 // container kinds below the 64 levels that skipValue keeps in a word; grown only when needed
}

// maxScanDepth is jsontext's nesting limit: a response nesting deeper fails its walk as it did with the decoder.
const maxScanDepth = 10000

// lookup returns the raw JSON value that rf names, walking the response and skipping whatever is not on the path.
// Responses are the upstream's: duplicate member names (the first one wins) and invalid UTF-8 (repaired when
// copied) are tolerated rather than failing a step for a field it never asked about.
func (w *walker) lookup(rf *ref, r Responses) (jsontext.Value, *ResolveError) {
	var b []byte
	if r != nil {
		b = r.Response(rf.step)
	}
	if len(b) == 0 {
		return nil, unresolvable(rf, "step "+quote(rf.key)+" has no response")
	}
	i := skipWS(b, 0)
	depth := 0 // containers entered on the path
	rest := rf.path
	walked := 0 // length of rf.path already walked, for messages
	for rest != "" {
		seg, tail, _ := strings.Cut(rest, ".")
		if i >= len(b) {
			return nil, badResponse(rf)
		}
		switch c := b[i]; c {
		case '{':
			if depth++; depth > maxScanDepth {
				return nil, badResponse(rf)
			}
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == '}' {
				return nil, unresolvable(rf, "no member "+quote(seg)+at(rf, walked))
			}
			for {
				if i >= len(b) || b[i] != '"' {
					return nil, badResponse(rf)
				}
				end, esc, ok := scanString(b, i)
				if !ok {
					return nil, badResponse(rf)
				}
				match := nameIs(b[i+1:end-1], esc, seg)
				if i = skipWS(b, end); i >= len(b) || b[i] != ':' {
					return nil, badResponse(rf)
				}
				i = skipWS(b, i+1)
				if match {
					break
				}
				if i, ok = w.skipValue(b, i, depth); !ok {
					return nil, badResponse(rf)
				}
				if i = skipWS(b, i); i < len(b) && b[i] == ',' {
					i = skipWS(b, i+1)
					continue
				}
				if i < len(b) && b[i] == '}' {
					return nil, unresolvable(rf, "no member "+quote(seg)+at(rf, walked))
				}
				return nil, badResponse(rf)
			}
		case '[':
			idx, ok := arrayIndex(seg)
			if !ok {
				return nil, unresolvable(rf, quote(seg)+" is not an array index"+at(rf, walked))
			}
			if depth++; depth > maxScanDepth {
				return nil, badResponse(rf)
			}
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == ']' {
				return nil, unresolvable(rf, "index "+seg+" out of range (length 0)"+at(rf, walked))
			}
			for n := 0; n < idx; n++ {
				if i, ok = w.skipValue(b, i, depth); !ok {
					return nil, badResponse(rf)
				}
				if i = skipWS(b, i); i < len(b) && b[i] == ',' {
					// An element must follow the comma (the decoder refuses the closing bracket there).
					if i = skipWS(b, i+1); i < len(b) && (b[i] == ']' || b[i] == '}') {
						return nil, badResponse(rf)
					}
					continue
				}
				if i < len(b) && b[i] == ']' {
					return nil, unresolvable(rf, "index "+seg+" out of range (length "+strconv.Itoa(n+1)+")"+at(rf, walked))
				}
				return nil, badResponse(rf)
			}
		default:
			// The decoder named the kind from the first byte alone; a closing bracket where a value stands is
			// an "invalid value" here, anything else that cannot start a value is a broken response.
			k := jsontext.Kind(c)
			switch {
			case c == '-' || '0' <= c && c <= '9':
				k = '0'
			case c == '"' || c == 't' || c == 'f' || c == 'n' || c == '}' || c == ']':
			default:
				return nil, badResponse(rf)
			}
			return nil, unresolvable(rf, "cannot take "+quote(seg)+" of a "+kindName(k)+at(rf, walked))
		}
		walked += len(seg) + 1
		rest = tail
	}
	end, ok := w.skipValue(b, i, depth)
	if !ok {
		return nil, badResponse(rf)
	}
	return b[i:end], nil
}

// skipWS returns the index of the first byte at or after i that is not JSON whitespace.
func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the index just after the JSON value starting at b[i] (whitespace already skipped). ok is false
// when the value is not valid JSON (strings may hold invalid UTF-8) or nests deeper than maxScanDepth counting the
// depth containers around it. It does not recurse: the kind of each open container is one bit, in a word for the
// first 64 levels and in w.deep below them.
func (w *walker) skipValue(b []byte, i, depth int) (end int, ok bool) {
	var (
		top  uint64 // bit k: the container open at level k (from 0) is an object
		open int    // containers open within the value
	)
	isObject := func() bool {
		k := open - 1
		if k < 64 {
			return top>>k&1 != 0
		}
		k -= 64
		return w.deep[k/64]>>(k%64)&1 != 0
	}
	for {
		// A value starts at b[i].
		if i >= len(b) {
			return i, false
		}
		switch c := b[i]; c {
		case '"':
			if i, _, ok = scanString(b, i); !ok {
				return i, false
			}
		case '{', '[':
			if depth+open >= maxScanDepth {
				return i, false
			}
			obj := uint64(0)
			if c == '{' {
				obj = 1
			}
			if k := open; k < 64 {
				top = top&^(1<<k) | obj<<k
			} else {
				k -= 64
				for k/64 >= len(w.deep) {
					w.deep = append(w.deep, 0)
				}
				w.deep[k/64] = w.deep[k/64]&^(1<<(k%64)) | obj<<(k%64)
			}
			open++
			i = skipWS(b, i+1)
			if i < len(b) && (c == '{' && b[i] == '}' || c == '[' && b[i] == ']') {
				open--
				i++
				break
			}
			if c == '{' {
				if i, ok = skipName(b, i); !ok {
					return i, false
				}
			}
			continue
		case 't':
			if i, ok = literalEnd(b, i, "true"); !ok {
				return i, false
			}
		case 'f':
			if i, ok = literalEnd(b, i, "false"); !ok {
				return i, false
			}
		case 'n':
			if i, ok = literalEnd(b, i, "null"); !ok {
				return i, false
			}
		default:
			if i, ok = numberEnd(b, i); !ok {
				return i, false
			}
		}
		// A value ended at i: close containers until one continues with another member or element.
		for {
			if open == 0 {
				return i, true
			}
			if i = skipWS(b, i); i >= len(b) {
				return i, false
			}
			obj := isObject()
			if b[i] == ',' {
				i = skipWS(b, i+1)
				if obj {
					if i, ok = skipName(b, i); !ok {
						return i, false
					}
				}
				break
			}
			if obj && b[i] == '}' || !obj && b[i] == ']' {
				open--
				i++
				continue
			}
			return i, false
		}
	}
}

// skipName skips an object member name at b[i] and the colon after it, returning the index of the value.
func skipName(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, _, ok := scanString(b, i)
	if !ok {
		return i, false
	}
	if i = skipWS(b, i); i >= len(b) || b[i] != ':' {
		return i, false
	}
	return skipWS(b, i+1), true
}

// scanString returns the index just after the JSON string starting at b[i] (a '"'), and whether it holds an escape.
// Invalid UTF-8 is allowed, as are escaped lone surrogates (as by jsontext.AllowInvalidUTF8); control characters
// and malformed escapes are not.
func scanString(b []byte, i int) (end int, escaped, ok bool) {
	for j := i + 1; j < len(b); {
		c := b[j]
		switch {
		case c == '"':
			return j + 1, escaped, true
		case c == '\\':
			escaped = true
			if j+1 >= len(b) {
				return j, escaped, false
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if _, ok := hex4(b, j+2); !ok {
					return j, escaped, false
				}
				j += 6
			default:
				return j, escaped, false
			}
		case c < 0x20:
			return j, escaped, false
		default:
			j++
		}
	}
	return len(b), escaped, false
}

// hex4 parses the four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// literalEnd returns the index just after the literal lit (true, false or null) at b[i].
func literalEnd(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// numberEnd returns the index just after the JSON number at b[i]. As with the decoder, the number ends where its
// grammar does ("01" is the number 0 followed by whatever "1" turns out to be).
func numberEnd(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return i, false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// nameIs compares the inside of a member name (already validated by scanString) with seg. A name without escapes is
// compared as it stands; one with escapes is unescaped on the fly, rune by rune. As with jsontext.AppendUnquote, a
// name that does not unescape to valid UTF-8 (invalid bytes, a lone surrogate) matches nothing.
func nameIs(name []byte, escaped bool, seg string) bool {
	if !escaped {
		return string(name) == seg
	}
	k := 0 // seg[:k] matched
	for j := 0; j < len(name); {
		c := name[j]
		if c != '\\' {
			if k >= len(seg) || seg[k] != c {
				return false
			}
			j++
			k++
			continue
		}
		var r rune
		switch name[j+1] {
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'u':
			r, _ = hex4(name, j+2)
			j += 4
			if utf16.IsSurrogate(r) {
				lo, ok := rune(0), false
				if j+3 < len(name) && name[j+2] == '\\' && name[j+3] == 'u' {
					lo, ok = hex4(name, j+4)
				}
				if r = utf16.DecodeRune(r, lo); !ok || r == utf8.RuneError {
					return false
				}
				j += 6
			}
		default: // '"', '\\', '/'
			r = rune(name[j+1])
		}
		j += 2
		var enc [utf8.UTFMax]byte
		n := utf8.EncodeRune(enc[:], r)
		if len(seg)-k < n || seg[k:k+n] != string(enc[:n]) {
			return false
		}
		k += n
	}
	// Raw bytes compared equal to seg's are valid UTF-8 as seg is: escapes only produce whole runes.
	return k == len(seg)
}
