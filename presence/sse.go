package presence

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// maxMessage bounds one SSE message (its lines together): a presence event with the largest metadata the relay
// accepts is well under it.
const maxMessage = 1 << 20

// errMessageTooLong: the relay sent a message larger than maxMessage.
var errMessageTooLong = errors.New("message longer than 1 MiB")

// sseMessage is one Server-Sent Events message: the fields Watch uses.
type sseMessage struct {
	id    string
	event string
	data  []byte
}

// sseReader reads messages from an event stream (the WHATWG "event stream interpretation", for the fields id,
// event and data; retry and comments are skipped).
type sseReader struct {
	sc *bufio.Scanner
}

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxMessage)
	sc.Split(scanLines)
	return &sseReader{sc: sc}
}

// next returns the next message, or io.EOF (or io.ErrUnexpectedEOF for a message cut short) at the end.
func (r *sseReader) next() (sseMessage, error) {
	var m sseMessage
	size, fields, hasData := 0, 0, false
	for r.sc.Scan() {
		line := r.sc.Bytes()
		if len(line) == 0 {
			if fields > 0 {
				return m, nil
			}
			continue
		}
		size += len(line)
		if size > maxMessage {
			return sseMessage{}, errMessageTooLong
		}
		if line[0] == ':' {
			continue
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(name) {
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				m.id = string(value)
			}
			fields++
		case "event":
			m.event = string(value)
			fields++
		case "data":
			if hasData {
				m.data = append(m.data, '\n')
			}
			m.data = append(m.data, value...)
			hasData = true
			fields++
		}
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return sseMessage{}, errMessageTooLong
		}
		return sseMessage{}, fmt.Errorf("read: %w", err)
	}
	if fields > 0 {
		return sseMessage{}, io.ErrUnexpectedEOF
	}
	return sseMessage{}, io.EOF
}

// scanLines splits on LF, CRLF or a lone CR, as event streams may.
func scanLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	for i, b := range data {
		switch b {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil // need one more byte to tell CR from CRLF
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
