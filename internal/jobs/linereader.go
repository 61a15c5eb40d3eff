package jobs

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"strconv"
)

// LineReader splits a job's NDJSON body into lines as it arrives, holding at most one line (MaxLine bytes) at a
// time, and fingerprints the whole body (sha256 over every byte read).
//
// A line ends at "\n" (a "\r" before it is dropped); a last line without one counts. Lines are numbered from 1. A
// line longer than the limit is not returned: Next reports a *LineTooLongError and skips to the next line.
type LineReader struct {
	r    *bufio.Reader
	max  int
	n    int64
	h    hash.Hash
	line []byte
	eof  bool
}

// LineTooLongError is a line over the reader's limit; the reader has skipped it.
type LineTooLongError struct {
	Line  int64
	Size  int64 // its length, without the newline
	Limit int
}

func (e *LineTooLongError) Error() string {
	return "line " + strconv.FormatInt(e.Line, 10) + " is " + strconv.FormatInt(e.Size, 10) +
		" bytes, over the " + strconv.Itoa(e.Limit) + "-byte limit of one batch"
}

// NewLineReader reads lines of at most maxLine bytes from r.
func NewLineReader(r io.Reader, maxLine int) *LineReader {
	return &LineReader{r: bufio.NewReaderSize(r, 64<<10), max: max(maxLine, 1), h: sha256.New()}
}

// Next returns the next line and its number, valid until the next call; io.EOF after the last line. Any other
// error but a *LineTooLongError is the underlying reader's, and ends the body.
func (lr *LineReader) Next() ([]byte, int64, error) {
	if lr.eof {
		return nil, lr.n, io.EOF
	}
	lr.line = lr.line[:0]
	var size int64
	over, newline := false, false
	for {
		chunk, err := lr.r.ReadSlice('\n')
		lr.h.Write(chunk)
		size += int64(len(chunk))
		if !over {
			if len(lr.line)+len(chunk) > lr.max+2 { // room for "\r\n"
				over, lr.line = true, lr.line[:0]
			} else {
				lr.line = append(lr.line, chunk...)
			}
		}
		if err == nil {
			newline = true
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if !errors.Is(err, io.EOF) {
			return nil, lr.n, err
		}
		lr.eof = true
		if size == 0 {
			return nil, lr.n, io.EOF
		}
		break
	}
	lr.n++
	if newline {
		size--
	}
	line := lr.line
	if newline && !over {
		line = line[:len(line)-1]
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if over || len(line) > lr.max {
		return nil, lr.n, &LineTooLongError{Line: lr.n, Size: size, Limit: lr.max}
	}
	return line, lr.n, nil
}

// Lines is the number of lines returned or skipped so far.
func (lr *LineReader) Lines() int64 { return lr.n }

// Sum is the fingerprint of every byte read so far: the body's once Next returned io.EOF.
func (lr *LineReader) Sum() Fingerprint {
	var fp Fingerprint
	lr.h.Sum(fp[:0])
	return fp
}
