package client

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// lineReader reads newline-terminated lines of at most max bytes each, counting every byte it consumed.
type lineReader struct {
	r     *bufio.Reader
	max   int64
	buf   []byte
	total int64
}

func newLineReader(r io.Reader, max int64) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// errLineTooLong is a line over the reader's bound.
var errLineTooLong = errors.New("line too long")

// next returns the next line without its "\n" (and "\r"); the slice is valid until the next call. Blank lines are
// skipped. At the end it returns io.EOF, and ErrIncomplete for a last line that has no "\n" (a cut stream).
func (l *lineReader) next() ([]byte, error) {
	for {
		l.buf = l.buf[:0]
		for {
			chunk, err := l.r.ReadSlice('\n')
			l.total += int64(len(chunk))
			if int64(len(l.buf)+len(chunk)) > l.max+1 {
				return nil, fmt.Errorf("%w: a line is over %d bytes (Config.MaxAnswer)", errLineTooLong, l.max)
			}
			l.buf = append(l.buf, chunk...)
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err != nil {
				if errors.Is(err, io.EOF) && len(bytes.TrimSpace(l.buf)) > 0 {
					return nil, ErrIncomplete
				}
				return nil, err
			}
			break
		}
		line := bytes.TrimRight(l.buf, "\r\n")
		if len(bytes.TrimSpace(line)) > 0 {
			return line, nil
		}
	}
}
