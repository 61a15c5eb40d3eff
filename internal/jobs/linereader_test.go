package jobs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type readLine struct {
	text    string
	n       int64
	tooLong bool
}

func readAll(t testing.TB, r io.Reader, limit int) ([]readLine, *LineReader, error) {
	lr := NewLineReader(r, limit)
	var out []readLine
	for i := 0; i < 1<<20; i++ {
		line, n, err := lr.Next()
		var tl *LineTooLongError
		switch {
		case errors.Is(err, io.EOF):
			return out, lr, nil
		case errors.As(err, &tl):
			if tl.Line != n {
				t.Fatalf("LineTooLongError names line %d, Next returned %d", tl.Line, n)
			}
			out = append(out, readLine{n: n, tooLong: true})
		case err != nil:
			return out, lr, err
		default:
			out = append(out, readLine{text: string(line), n: n})
		}
	}
	t.Fatal("LineReader never ended")
	return nil, nil, nil
}

func TestLineReader(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		limit int
		want  []readLine
	}{
		{"empty body", "", 10, nil},
		{"one line without newline", `{"a":1}`, 10, []readLine{{text: `{"a":1}`, n: 1}}},
		{"trailing newline adds no line", "a\nb\n", 10, []readLine{{text: "a", n: 1}, {text: "b", n: 2}}},
		{"CRLF", "a\r\nb\r\n", 10, []readLine{{text: "a", n: 1}, {text: "b", n: 2}}},
		{"empty lines are lines", "a\n\nb", 10, []readLine{{text: "a", n: 1}, {text: "", n: 2}, {text: "b", n: 3}}},
		{"too long, then on", "aaaaaaaaaaaaaaaa\nok\n", 5, []readLine{{n: 1, tooLong: true}, {text: "ok", n: 2}}},
		{"exactly the limit", "12345\n", 5, []readLine{{text: "12345", n: 1}}},
		{"one over the limit", "123456\n", 5, []readLine{{n: 1, tooLong: true}}},
		{"too long last line", "ok\n" + strings.Repeat("x", 200), 5, []readLine{{text: "ok", n: 1}, {n: 2, tooLong: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, lr, err := readAll(t, iotest.OneByteReader(strings.NewReader(tc.in)), tc.limit)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, Fingerprint(sha256.Sum256([]byte(tc.in))), lr.Sum())
		})
	}
}

func TestLineReaderLongLinesCostNoMemory(t *testing.T) {
	// A 10 MiB line over a 1 KiB limit is skipped, never held.
	in := io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("x"), 10<<20)), strings.NewReader("\nok\n"))
	lr := NewLineReader(in, 1<<10)
	_, _, err := lr.Next()
	var tl *LineTooLongError
	require.ErrorAs(t, err, &tl)
	assert.Equal(t, int64(10<<20), tl.Size)
	assert.LessOrEqual(t, cap(lr.line), 4<<10+64<<10)
	line, n, err := lr.Next()
	require.NoError(t, err)
	assert.Equal(t, "ok", string(line))
	assert.Equal(t, int64(2), n)
}

func TestLineReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	_, _, err := readAll(t, io.MultiReader(strings.NewReader("a\nb"), iotest.ErrReader(boom)), 10)
	assert.ErrorIs(t, err, boom)
}

// FuzzLineReader: whatever the body and limit, the reader returns lines numbered 1, 2, … in order, none over the
// limit and none holding a newline; with no line over the limit, the lines are the body split at each newline
// (less a final newline), each without one trailing "\r"; the fingerprint is the body's sha256.
func FuzzLineReader(f *testing.F) {
	for _, s := range []string{"", "\n", "a\nb", "a\r\n\r\nb\n", `{"requests":[]}` + "\n", strings.Repeat("x", 70000) + "\ny"} {
		f.Add([]byte(s), uint16(8))
	}
	f.Fuzz(func(t *testing.T, body []byte, limit uint16) {
		lim := int(limit%2048) + 1
		got, lr, err := readAll(t, iotest.HalfReader(bytes.NewReader(body)), lim)
		require.NoError(t, err)
		require.Equal(t, Fingerprint(sha256.Sum256(body)), lr.Sum())
		over := false
		var lines []string
		for i, l := range got {
			require.Equal(t, int64(i+1), l.n)
			if l.tooLong {
				over = true
				continue
			}
			require.LessOrEqual(t, len(l.text), lim)
			require.NotContains(t, l.text, "\n")
			lines = append(lines, l.text)
		}
		if over {
			return
		}
		if len(body) == 0 {
			require.Empty(t, got)
			return
		}
		want := strings.Split(string(body), "\n")
		if body[len(body)-1] == '\n' {
			want = want[:len(want)-1] // a final newline ends the last line; it starts none
		}
		for i := range want {
			want[i] = strings.TrimSuffix(want[i], "\r")
		}
		require.Equal(t, want, lines)
	})
}
