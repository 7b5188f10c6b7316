package usage

import "bytes"

// member names a member of a JSON document whose raw value a scanner copies.
type member uint8

const (
	memberModel         member = iota // the top-level "model"
	memberUsage                       // the top-level "usage"
	memberType                        // the top-level "type" of a Responses API event
	memberResponseModel               // "response"."model" of a Responses API event
	memberResponseUsage               // "response"."usage" of a Responses API event
	numMembers
)

// sought describes, for each member, where it is (its name, and whether it is
// in the top-level "response" member), the first byte of the values taken (a
// string's '"' or an object's '{'), and the longest value kept: a longer value
// is dropped. A usage object with all its *_details members is a few hundred
// bytes.
var sought = [numMembers]struct {
	name       string
	inResponse bool
	first      byte
	max        int
}{
	memberModel:         {"model", false, '"', maxModel},
	memberUsage:         {"usage", false, '{', maxUsage},
	memberType:          {"type", false, '"', 32},
	memberResponseModel: {"model", true, '"', maxModel},
	memberResponseUsage: {"usage", true, '{', maxUsage},
}

// Bounds of the copies of a model name and of a usage object.
const (
	maxModel = 256
	maxUsage = 4 << 10
)

// capture is the raw bytes of one member's value, copied as it streams past.
type capture struct {
	buf      []byte // grows as the value arrives, up to limit
	limit    int    // the member's bound
	complete bool   // buf holds the whole value
	overflow bool   // the value is longer than its bound
}

// captureStart is the capacity a capture's buffer starts with: a model name
// or a usage object fits in it or in one doubling, where allocating the
// bound (4 KiB for usage) for every response was a quarter of what the
// edge allocates per small request.
const captureStart = 256

// docState is where a scanner is in its document.
type docState uint8

const (
	docStart  docState = iota // before the first non-space byte
	docObject                 // inside the top-level object
	docDone                   // the top-level object is closed; the rest is ignored
	docBad                    // not an object, or malformed; the rest is ignored
)

// objState is where a scanner is in a tracked object (see scanner).
type objState uint8

const (
	objKey     objState = iota // expecting a member name or '}'
	objColon                   // after a member name, expecting ':'
	objValue                   // after ':', expecting a value
	objInValue                 // in or after a value, expecting ',' or '}'
)

// A scanner reads one JSON document incrementally, in chunks split anywhere,
// and copies out a few members' raw values without holding the document. It
// tracks nesting depth and string and escape state; only the top-level
// object, and the object in its "response" member, are "tracked": their
// member names are read, and the values of the members in sought are copied.
// Everything else, whatever its size, is skipped without being copied, so
// names inside nested values or inside strings are never taken. Bytes that
// break the JSON grammar at a tracked level make the scanner ignore the rest
// of the document.
type scanner struct {
	doc        docState
	obj        objState // state in the innermost tracked object
	depth      int      // open objects and arrays
	inResponse bool     // the tracked object at depth 2 is the top-level "response" member
	inString   bool
	inKey      bool     // the string is a member name in a tracked object
	escape     bool     // the previous string byte is an unpaired backslash
	key        [8]byte  // the last member name read, long enough for "response"
	keyLen     int      // its length, or len(key)+1 for longer names
	cur        *capture // the capture receiving the value being read, if any
	caps       [numMembers]capture
}

// reset prepares s for a new document, keeping its buffers.
func (s *scanner) reset() {
	caps := s.caps
	*s = scanner{}
	for i := range caps {
		s.caps[i].buf = caps[i].buf[:0]
	}
}

// model returns the raw model name of the document, nil if not seen in full:
// the top-level one, or else the one in the "response" member.
func (s *scanner) model() []byte {
	for _, m := range [...]member{memberModel, memberResponseModel} {
		if c := &s.caps[m]; c.complete {
			return c.buf
		}
	}
	return nil
}

// usage returns the capture of the document's usage object, nil if not seen
// in full: the top-level one, or else the one in the "response" member if the
// document is an event that ends a Responses API stream.
func (s *scanner) usage() *capture {
	if c := &s.caps[memberUsage]; c.complete {
		return c
	}
	if c := &s.caps[memberResponseUsage]; c.complete && s.isFinalEvent() {
		return c
	}
	return nil
}

// isFinalEvent reports whether the document's type is that of an event that
// ends a Responses API stream and carries the final response.
func (s *scanner) isFinalEvent() bool {
	t := &s.caps[memberType]
	if !t.complete {
		return false
	}
	switch string(t.buf) {
	case `"response.completed"`, `"response.incomplete"`, `"response.failed"`:
		return true
	}
	return false
}

// feed scans the next bytes of the document. Strings, and the insides of
// values below the tracked objects, are consumed a span at a time.
func (s *scanner) feed(p []byte) {
	for i := 0; i < len(p); {
		switch {
		case s.doc == docStart:
			s.start(p[i])
			i++
		case s.doc != docObject:
			return
		case s.inString:
			n := s.skipString(p[i:])
			s.stringBytes(p[i : i+n])
			i += n
		case s.depth > s.level():
			n := skipPlain(p[i:])
			if i+n < len(p) {
				s.nest(p[i+n])
				n++
			}
			s.put(p[i : i+n])
			i += n
		default:
			s.member(p[i])
			i++
		}
	}
}

// level returns the depth of the innermost tracked object.
func (s *scanner) level() int {
	if s.inResponse {
		return 2
	}
	return 1
}

// start reads a byte before the document's top-level value.
func (s *scanner) start(c byte) {
	switch {
	case isSpace(c):
	case c == '{':
		s.doc, s.depth = docObject, 1
	default:
		s.doc = docBad
	}
}

// stringBytes records the bytes of a string that skipString consumed: in
// the member name being read, or in the value being copied.
func (s *scanner) stringBytes(b []byte) {
	if !s.inKey {
		s.put(b)
		return
	}
	if !s.inString {
		b = b[:len(b)-1] // the closing quote
		s.inKey, s.obj = false, objColon
	}
	if s.keyLen+len(b) > len(s.key) {
		s.keyLen = len(s.key) + 1
		return
	}
	s.keyLen += copy(s.key[s.keyLen:], b)
}

// nest reads one byte, outside strings, of a value: it follows strings and
// nesting.
func (s *scanner) nest(c byte) {
	switch c {
	case '"':
		s.inString = true
	case '{', '[':
		s.depth++
	case '}', ']':
		s.depth--
	}
}

// member reads one byte, outside strings, at the level of a tracked object.
func (s *scanner) member(c byte) {
	if isSpace(c) {
		return
	}
	switch s.obj {
	case objKey:
		switch c {
		case '"':
			s.inString, s.inKey, s.keyLen = true, true, 0
		case '}':
			s.closeObject()
		default:
			s.doc = docBad
		}
	case objColon:
		if c != ':' {
			s.doc = docBad
			return
		}
		s.obj = objValue
	case objValue:
		s.obj = objInValue
		s.beginValue(c)
	case objInValue:
		switch c {
		case ',':
			s.endValue()
			s.obj = objKey
		case '}':
			s.endValue()
			s.closeObject()
		default:
			s.value(c)
		}
	}
}

// beginValue reads the first byte of a tracked object's member value, and
// starts copying the value if it is sought.
func (s *scanner) beginValue(c byte) {
	if c == '{' && !s.inResponse && s.keyIs("response") {
		s.inResponse, s.depth, s.obj = true, 2, objKey
		return
	}
	for m := range sought {
		if w := &sought[m]; w.inResponse == s.inResponse && w.first == c && s.keyIs(w.name) {
			s.begin(member(m))
		}
	}
	s.value(c)
}

// value reads one byte, outside strings, of a tracked object's member value.
func (s *scanner) value(c byte) {
	switch c {
	case ',', ':', '}', ']':
		s.doc = docBad
	default:
		s.put([]byte{c})
		s.nest(c)
	}
}

// endValue ends a tracked object's member value.
func (s *scanner) endValue() {
	if s.cur != nil {
		s.cur.complete = !s.cur.overflow
		s.cur = nil
	}
}

// closeObject closes a tracked object.
func (s *scanner) closeObject() {
	s.depth--
	switch {
	case s.depth == 0:
		s.doc = docDone
	case s.inResponse:
		s.inResponse, s.obj = false, objInValue
	}
}

// keyIs reports whether the last member name read is name.
func (s *scanner) keyIs(name string) bool {
	return s.keyLen == len(name) && string(s.key[:s.keyLen]) == name
}

// begin starts copying the value of m.
func (s *scanner) begin(m member) {
	c := &s.caps[m]
	if c.buf == nil {
		c.buf = make([]byte, 0, min(captureStart, sought[m].max))
	}
	*c = capture{buf: c.buf[:0], limit: sought[m].max}
	s.cur = c
}

// put copies b into the value being copied, if any.
func (s *scanner) put(b []byte) {
	switch {
	case s.cur == nil:
	case len(s.cur.buf)+len(b) <= s.cur.limit:
		s.cur.buf = append(s.cur.buf, b...)
	default:
		s.cur.overflow = true
	}
}

// skipString consumes the bytes of a string, up to and including its closing
// quote, and returns how many it consumed. It finds quotes with
// bytes.IndexByte rather than byte by byte, since strings (base64 images and
// embeddings, long texts) are most of a large body.
func (s *scanner) skipString(p []byte) int {
	i := 0
	if s.escape {
		s.escape, i = false, 1
	}
	for {
		q := bytes.IndexByte(p[i:], '"')
		if q < 0 {
			s.escape = oddBackslashes(p[i:])
			return len(p)
		}
		q += i
		if !oddBackslashes(p[i:q]) {
			s.inString = false
			return q + 1
		}
		i = q + 1
	}
}

// oddBackslashes reports whether b ends in an odd number of backslashes, that
// is, whether the byte after b is escaped.
func oddBackslashes(b []byte) bool {
	n := 0
	for n < len(b) && b[len(b)-1-n] == '\\' {
		n++
	}
	return n%2 == 1
}

// structural marks the bytes that matter outside strings below the tracked
// objects: those nest reads.
var structural = [256]bool{'"': true, '{': true, '}': true, '[': true, ']': true}

// skipPlain returns the index of the first structural byte of p, or len(p).
func skipPlain(p []byte) int {
	for i, c := range p {
		if structural[c] {
			return i
		}
	}
	return len(p)
}

// isSpace reports whether c is JSON whitespace.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n'
}
