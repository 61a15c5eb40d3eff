// Package jsonscan reads JSON text in place, without decoding it into Go values: skipping and validating a value,
// scanning a string, finding a member or element through a per-document index (Doc), telling REGOS's business
// failure ("ok": false), compacting a value onto one line and writing a Go string as a JSON string. It is batchd's
// one JSON scanner: the planner, the runner (and tracing, through runner.CallOutcome), errcode and the transport
// read and write response JSON through it. A whole document that must be valid is read with jsontext's Decoder
// instead (a batch request in the planner, an answer in the load tool's checks).
//
// Contract:
//   - Every function accepts any bytes: on malformed input it reports failure, and it never panics, loops or
//     recurses with the input's nesting (nesting is tracked in a bit stack, and limited to MaxDepth).
//   - Strings may hold invalid UTF-8 and escaped lone surrogates, as upstream responses sometimes do; what is
//     copied out of them is left to the caller (AppendString repairs what it writes).
//   - Nothing here allocates on valid input except a Doc's index, whose size is reported to the Doc's charge
//     function before it is kept.
package jsonscan

import (
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting Skip and Doc accept, as jsontext's decoder does: a value nesting deeper is
// malformed.
const MaxDepth = 10000

// SkipSpace returns the index of the first byte at or after i that is not JSON whitespace.
func SkipSpace(b []byte, i int) int {
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

// ScanString returns the index just after the JSON string starting at b[i] (a '"'), and whether it holds an
// escape. Invalid UTF-8 and escaped lone surrogates are allowed; control characters and malformed escapes are not.
func ScanString(b []byte, i int) (end int, escaped, ok bool) {
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

// Skip returns the index just after the JSON value starting at b[i] (whitespace already skipped), checking its
// syntax on the way. depth is the number of containers already open around the value; ok is false when the value
// is malformed or nests deeper than MaxDepth counting them.
func Skip(b []byte, i, depth int) (end int, ok bool) {
	var st bitStack // bit k: the container open at level k (from 0) within the value is an object
	for {
		// A value starts at b[i].
		if i >= len(b) {
			return i, false
		}
		switch c := b[i]; c {
		case '"':
			if i, _, ok = ScanString(b, i); !ok {
				return i, false
			}
		case '{', '[':
			if depth+st.n >= MaxDepth {
				return i, false
			}
			st.push(c == '{')
			i = SkipSpace(b, i+1)
			if i < len(b) && (c == '{' && b[i] == '}' || c == '[' && b[i] == ']') {
				st.n--
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
			if st.n == 0 {
				return i, true
			}
			if i = SkipSpace(b, i); i >= len(b) {
				return i, false
			}
			obj := st.top()
			if b[i] == ',' {
				i = SkipSpace(b, i+1)
				if obj {
					if i, ok = skipName(b, i); !ok {
						return i, false
					}
				}
				break
			}
			if obj && b[i] == '}' || !obj && b[i] == ']' {
				st.n--
				i++
				continue
			}
			return i, false
		}
	}
}

// bitStack holds one bit per open container: 64 in a word, the rest in deep, grown only for deeper values.
type bitStack struct {
	word uint64
	deep []uint64
	n    int
}

func (s *bitStack) push(bit bool) {
	var v uint64
	if bit {
		v = 1
	}
	if k := s.n; k < 64 {
		s.word = s.word&^(1<<k) | v<<k
	} else {
		k -= 64
		for k/64 >= len(s.deep) {
			s.deep = append(s.deep, 0)
		}
		s.deep[k/64] = s.deep[k/64]&^(1<<(k%64)) | v<<(k%64)
	}
	s.n++
}

func (s *bitStack) top() bool {
	k := s.n - 1
	if k < 64 {
		return s.word>>k&1 != 0
	}
	k -= 64
	return s.deep[k/64]>>(k%64)&1 != 0
}

// skipName skips an object member name at b[i] and the colon after it, returning the index of the value.
func skipName(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, _, ok := ScanString(b, i)
	if !ok {
		return i, false
	}
	if i = SkipSpace(b, i); i >= len(b) || b[i] != ':' {
		return i, false
	}
	return SkipSpace(b, i+1), true
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

// numberEnd returns the index just after the JSON number at b[i]. As with a decoder, the number ends where its
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

// Strings calls f with every string of the JSON text b (already valid: the caller has checked it), at b[start:end]
// with its quotes, and whether it is an object member name; it returns the deepest nesting of b.
func Strings(b []byte, f func(start, end int, name bool)) (depth int) {
	var st bitStack
	inObject := func() bool { return st.n > 0 && st.top() }
	expectName := false // in an object, the next string is a name
	for i := 0; i < len(b); {
		switch c := b[i]; c {
		case '"':
			end, _, _ := ScanString(b, i)
			f(i, end, expectName)
			i = end
			continue
		case '{', '[':
			st.push(c == '{')
			depth = max(depth, st.n)
			expectName = c == '{'
		case '}', ']':
			st.n--
			expectName = false
		case ',':
			expectName = inObject()
		case ':':
			expectName = false
		}
		i++
	}
	return depth
}

// NameIs compares the inside of a JSON string (already checked by ScanString; escaped as it reported) with s. A
// string without escapes is compared as it stands; one with escapes is unescaped on the fly, rune by rune. A string
// that does not unescape to valid UTF-8 (a lone surrogate) matches nothing.
func NameIs(name []byte, escaped bool, s string) bool {
	if !escaped {
		return string(name) == s
	}
	k := 0 // s[:k] matched
	for j := 0; j < len(name); {
		c := name[j]
		if c != '\\' {
			if k >= len(s) || s[k] != c {
				return false
			}
			j++
			k++
			continue
		}
		r, n, ok := unescape(name, j)
		if !ok {
			return false
		}
		j += n
		var enc [utf8.UTFMax]byte
		m := utf8.EncodeRune(enc[:], r)
		if len(s)-k < m || s[k:k+m] != string(enc[:m]) {
			return false
		}
		k += m
	}
	// Raw bytes compared equal to s's are valid UTF-8 as s is: escapes only produce whole runes.
	return k == len(s)
}

// unescape decodes the escape at b[j] (a '\\' inside a string ScanString accepted): the rune, the bytes it took,
// and false for a lone surrogate.
func unescape(b []byte, j int) (r rune, n int, ok bool) {
	switch b[j+1] {
	case 'b':
		return '\b', 2, true
	case 'f':
		return '\f', 2, true
	case 'n':
		return '\n', 2, true
	case 'r':
		return '\r', 2, true
	case 't':
		return '\t', 2, true
	case 'u':
		r, _ = hex4(b, j+2)
		if !utf16.IsSurrogate(r) {
			return r, 6, true
		}
		if j+12 <= len(b) && b[j+6] == '\\' && b[j+7] == 'u' {
			if lo, ok := hex4(b, j+8); ok {
				if r = utf16.DecodeRune(r, lo); r != utf8.RuneError {
					return r, 12, true
				}
			}
		}
		return utf8.RuneError, 6, false
	default: // '"', '\\', '/'
		return rune(b[j+1]), 2, true
	}
}

// ArrayIndex parses a path segment as an array index: decimal, no sign, no leading zero except "0", at most nine
// digits.
func ArrayIndex(seg string) (int, bool) {
	if seg == "" || len(seg) > 9 || (seg[0] == '0' && len(seg) > 1) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// BusinessFailure reports whether b is a JSON object whose top-level "ok" member is false: REGOS reports business
// errors as HTTP 200 with "ok": false. It reads only up to the first top-level "ok" member (REGOS puts it first); a
// body that is malformed up to that point is not a business failure.
func BusinessFailure(b []byte) bool {
	i := SkipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = SkipSpace(b, i+1)
	for i < len(b) && b[i] == '"' {
		end, escaped, ok := ScanString(b, i)
		if !ok {
			return false
		}
		isOK := NameIs(b[i+1:end-1], escaped, "ok")
		if i = SkipSpace(b, end); i >= len(b) || b[i] != ':' {
			return false
		}
		i = SkipSpace(b, i+1)
		if isOK {
			j, ok := literalEnd(b, i, "false")
			return ok && (j == len(b) || isDelim(b[j]))
		}
		if i, ok = Skip(b, i, 1); !ok {
			return false
		}
		if i = SkipSpace(b, i); i >= len(b) || b[i] != ',' {
			return false
		}
		i = SkipSpace(b, i+1)
	}
	return false
}

func isDelim(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', ',', '}', ']':
		return true
	}
	return false
}

// AppendString appends s as a JSON string: quoted, with '"', '\\' and control characters escaped (\n, \r and \t
// as such, the others as \u00XX) and invalid UTF-8 replaced by U+FFFD, so that the result is always valid JSON.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = AppendStringContent(dst, s)
	return append(dst, '"')
}

// AppendStringContent appends what AppendString puts between the quotes.
func AppendStringContent(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst = append(dst, s[last:i]...)
				dst = append(dst, `\ufffd`...)
				i++
				last = i
				continue
			}
			i += n
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[last:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		last = i
	}
	return append(dst, s[last:]...)
}

// StringLen is the length of what AppendStringContent appends for s, computed without writing it.
func StringLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				n += len(`\ufffd`)
			} else {
				n += size
			}
			i += size
			continue
		}
		switch {
		case c == '"', c == '\\', c == '\n', c == '\r', c == '\t':
			n += 2
		case c < 0x20:
			n += 6
		default:
			n++
		}
		i++
	}
	return n
}

// Compact hands emit the JSON text src without the whitespace between tokens, in runs, so that a value written on
// several lines (a pretty-printing upstream) takes one without being copied first. Whitespace inside strings is
// escaped already in valid JSON; anything else is passed on as it stands, whatever src holds.
func Compact(src []byte, emit func([]byte)) {
	inString, escaped := false, false
	last := 0
	for i, c := range src {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			if last < i {
				emit(src[last:i])
			}
			last = i + 1
		}
	}
	if last < len(src) {
		emit(src[last:])
	}
}

// CompactLen is the number of bytes Compact emits for src.
func CompactLen(src []byte) int {
	n := 0
	Compact(src, func(b []byte) { n += len(b) })
	return n
}

// HasLineBreak reports whether b holds a CR or LF byte: in valid JSON only whitespace between tokens can.
func HasLineBreak(b []byte) bool {
	for _, c := range b {
		if c == '\n' || c == '\r' {
			return true
		}
	}
	return false
}

// Elements calls f (when not nil) with each element of the JSON array b, in order, and returns how many there are.
// b must be an array as a Doc returns it (checked); it stops at the first malformed element.
func Elements(b []byte, f func(elem []byte)) int {
	i := SkipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return 0
	}
	n := 0
	i = SkipSpace(b, i+1)
	for i < len(b) && b[i] != ']' {
		end, ok := Skip(b, i, 1)
		if !ok {
			return n
		}
		if f != nil {
			f(b[i:end])
		}
		n++
		i = SkipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = SkipSpace(b, i+1)
		}
	}
	return n
}
