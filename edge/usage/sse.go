package usage

import (
	"bytes"
	"encoding/json"
)

// lineState is where a meter is in a line of an event stream.
type lineState uint8

const (
	lineStart     lineState = iota // at the start of a line
	lineName                       // in a field name
	lineDataStart                  // right after "data:", where one space is dropped
	lineData                       // in the value of a data field
	lineSkip                       // in any other line (event, id, retry, comment), name or value
)

// sseState is a meter's position in an event stream, which it reads as the
// HTML Living Standard says: lines end in CR, LF or CRLF; a line "name:value"
// (or "name: value") is a field; lines starting with ':' are comments; the
// values of an event's data fields, joined by LF, are its data; and a blank
// line ends the event. A data value is never held: it goes straight into the
// meter's scanner, as a JSON document read across the event's data lines.
type sseState struct {
	line    lineState
	name    int  // how many bytes of the field name matched "data"
	afterCR bool // the last line ended in CR, so an LF that follows is part of it
	hasData bool // the event has a data field
	// done counts the bytes of the event's data that match "[DONE]", the
	// end of a chat completions stream; -1 once they do not.
	done int
}

// doneData is the data of the event that ends a chat completions stream.
const doneData = "[DONE]"

// matchDone matches the next bytes of the event's data against doneData.
func (st *sseState) matchDone(p []byte) {
	if st.done < 0 {
		return
	}
	if st.done+len(p) > len(doneData) || string(p) != doneData[st.done:st.done+len(p)] {
		st.done = -1
		return
	}
	st.done += len(p)
}

// lf joins the data fields of an event.
var lf = []byte{'\n'}

// writeSSE reads the next bytes of an event stream.
func (m *Meter) writeSSE(p []byte) {
	st := &m.sse
	for i := 0; i < len(p); {
		c := p[i]
		if st.afterCR {
			st.afterCR = false
			if c == '\n' {
				i++
				continue
			}
		}
		switch st.line {
		case lineStart:
			if c == '\r' || c == '\n' {
				m.dispatch()
				st.endLine(c)
				i++
				continue
			}
			st.line, st.name = lineName, 0
		case lineName:
			i++
			switch {
			case c == ':':
				st.line = lineSkip
				if st.name == len("data") {
					m.beginData()
					st.line = lineDataStart
				}
			case c == '\r' || c == '\n':
				if st.name == len("data") {
					m.beginData()
				}
				st.endLine(c)
			case st.name < len("data") && c == "data"[st.name]:
				st.name++
			default:
				st.line = lineSkip
			}
		case lineDataStart:
			st.line = lineData
			if c == ' ' {
				i++
			}
		default: // lineData, lineSkip
			n := lineEnd(p[i:])
			if st.line == lineData {
				m.sc.feed(p[i : i+n])
				st.matchDone(p[i : i+n])
			}
			if i += n; i < len(p) {
				st.endLine(p[i])
				i++
			}
		}
	}
}

// endLine ends a line with its terminator c, CR or LF.
func (st *sseState) endLine(c byte) {
	st.line, st.afterCR = lineStart, c == '\r'
}

// lineEnd returns the index of the first CR or LF in p, or len(p).
func lineEnd(p []byte) int {
	n := bytes.IndexByte(p, '\n')
	if n < 0 {
		n = len(p)
	}
	if r := bytes.IndexByte(p[:n], '\r'); r >= 0 {
		return r
	}
	return n
}

// beginData starts a data field of the current event.
func (m *Meter) beginData() {
	if m.sse.hasData {
		m.sc.feed(lf)
		m.sse.done = -1 // data of several lines is never doneData
	}
	m.sse.hasData = true
}

// dispatch ends the current event. If its data was a whole JSON object, the
// model and usage it reports replace those of earlier events.
func (m *Meter) dispatch() {
	if !m.sse.hasData {
		return
	}
	m.sse.hasData = false
	if m.sse.done == len(doneData) || (m.sc.doc == docDone && m.sc.isFinalEvent()) {
		m.finished = true
	}
	m.sse.done = 0
	if m.sc.doc == docDone {
		if model := m.sc.model(); model != nil && string(model) != m.model {
			m.model = string(model)
		}
		if c := m.sc.usage(); c != nil && json.Valid(c.buf) {
			// Swap the buffers: the scanner reuses the one no longer needed.
			m.usage, c.buf = c.buf, m.usage[:0]
		}
	}
	m.sc.reset()
}
