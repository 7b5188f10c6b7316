package proto

import (
	"encoding/binary"
	"net/http"
	"net/textproto"

	"golang.org/x/net/http/httpguts"
)

// fieldEncoder appends tag · length · value fields to a byte slice.
type fieldEncoder struct{ b []byte }

func (e *fieldEncoder) bytes(tag uint64, v []byte) {
	e.b = binary.AppendUvarint(e.b, tag)
	e.b = binary.AppendUvarint(e.b, uint64(len(v)))
	e.b = append(e.b, v...)
}

func (e *fieldEncoder) string(tag uint64, v string) {
	e.b = binary.AppendUvarint(e.b, tag)
	e.b = binary.AppendUvarint(e.b, uint64(len(v)))
	e.b = append(e.b, v...)
}

// stringIfSet writes a string field only when it is not empty.
func (e *fieldEncoder) stringIfSet(tag uint64, v string) {
	if v != "" {
		e.string(tag, v)
	}
}

func (e *fieldEncoder) uint(tag, v uint64) {
	var tmp [binary.MaxVarintLen64]byte
	e.bytes(tag, binary.AppendUvarint(tmp[:0], v))
}

// header writes one field per header value: uvarint name length, name, value.
func (e *fieldEncoder) header(tag uint64, h http.Header) {
	for name, values := range h {
		for _, v := range values {
			e.b = binary.AppendUvarint(e.b, tag)
			e.b = binary.AppendUvarint(e.b, uint64(uvarintLen(uint64(len(name)))+len(name)+len(v)))
			e.b = binary.AppendUvarint(e.b, uint64(len(name)))
			e.b = append(e.b, name...)
			e.b = append(e.b, v...)
		}
	}
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// fieldDecoder walks the fields of a payload. Each step checks lengths against
// what is left, so a hostile length can never cause an allocation or a read
// past the end.
type fieldDecoder struct {
	b   []byte
	tag uint64
	val []byte
	err error

	// For heads (newHeadDecoder): the whole payload as one string, which
	// string fields and header names and values are cut from instead of
	// each being copied; off is where b starts in it, valOff where val
	// does. vals is the backing array the header values are handed out
	// from, a chunk at a time. A head holds a few dozen strings; this
	// makes its decoding a handful of allocations instead of three per
	// header field (issue 9).
	s      string
	off    int
	valOff int
	vals   []string
}

// headValuesChunk is how many header values one allocation of
// fieldDecoder.vals holds.
const headValuesChunk = 16

// newHeadDecoder returns a decoder for a head or trailer payload whose
// strings share one copy of p.
func newHeadDecoder(p []byte) fieldDecoder {
	return fieldDecoder{b: p, s: string(p)}
}

// str returns the current field's value as a string.
func (d *fieldDecoder) str() string {
	if d.s == "" {
		return string(d.val)
	}
	return d.s[d.valOff : d.valOff+len(d.val)]
}

// next advances to the next field. It returns false at the end or on error.
func (d *fieldDecoder) next() bool {
	if d.err != nil || len(d.b) == 0 {
		return false
	}
	tag, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = protocolErrorf("bad field tag")
		return false
	}
	d.b = d.b[n:]
	l, m := binary.Uvarint(d.b)
	if m <= 0 {
		d.err = protocolErrorf("bad length of field %d", tag)
		return false
	}
	d.b = d.b[m:]
	if l > uint64(len(d.b)) {
		d.err = protocolErrorf("field %d: length %d exceeds the %d bytes left", tag, l, len(d.b))
		return false
	}
	d.valOff = d.off + n + m
	d.off = d.valOff + int(l)
	d.tag, d.val, d.b = tag, d.b[:l], d.b[l:]
	return true
}

// uint decodes the current field as a uvarint.
func (d *fieldDecoder) uint(what string) uint64 {
	v, n := binary.Uvarint(d.val)
	if n <= 0 || n != len(d.val) {
		d.err = protocolErrorf("%s: bad number", what)
	}
	return v
}

// header decodes the current field as one header value and adds it to h,
// which it creates on first use. The name is canonicalized, so that a
// lower-case "authorization" is the same header as "Authorization" to every
// later Get and Del. Names must be HTTP tokens and values must not contain
// CR, LF or NUL: a head can never smuggle a header line.
func (d *fieldDecoder) header(h *http.Header, count *int, lim Limits, what string) {
	*count++
	if *count > lim.MaxHeaderCount {
		d.err = protocolErrorf("%s: more than %d header fields", what, lim.MaxHeaderCount)
		return
	}
	l, n := binary.Uvarint(d.val)
	if n <= 0 || l > uint64(len(d.val)-n) {
		d.err = protocolErrorf("%s: bad header name length", what)
		return
	}
	all := d.str()
	name, value := all[n:n+int(l)], all[n+int(l):]
	if !httpguts.ValidHeaderFieldName(name) {
		d.err = protocolErrorf("%s: invalid header name %q", what, name)
		return
	}
	if !httpguts.ValidHeaderFieldValue(value) {
		d.err = protocolErrorf("%s: invalid value for header %q", what, name)
		return
	}
	if *h == nil {
		*h = make(http.Header)
	}
	key := textproto.CanonicalMIMEHeaderKey(name)
	if prior, ok := (*h)[key]; ok {
		(*h)[key] = append(prior, value)
		return
	}
	if len(d.vals) == cap(d.vals) {
		d.vals = make([]string, 0, headValuesChunk)
	}
	d.vals = append(d.vals, value)
	i := len(d.vals)
	(*h)[key] = d.vals[i-1 : i : i]
}
