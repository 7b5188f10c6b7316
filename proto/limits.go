package proto

import "fmt"

// Limits bound what a peer may send. They are part of the format: a frame
// beyond a limit is a protocol error that ends that stream, never a reason to
// allocate.
type Limits struct {
	// MaxHeadSize is the largest HEAD or END payload in bytes.
	// Default: 64 KiB. Zero means the default.
	MaxHeadSize int
	// MaxHeaderCount is the most header (or trailer) fields in one head.
	// Default: 256. Zero means the default.
	MaxHeaderCount int
	// MaxDataSize is the largest DATA payload in bytes. Writers split larger
	// writes. Default: 256 KiB. Zero means the default.
	MaxDataSize int
}

// Fixed limits that are not configurable.
const (
	// MaxControlSize is the largest control-stream payload in bytes.
	MaxControlSize = 64 << 10
	// MaxResetSize is the largest RESET payload in bytes; longer messages are
	// truncated by the writer.
	MaxResetSize = 4 << 10
	// maxFrameHeaderLen is the room a frame header takes: the type byte and a
	// uvarint of at most 4 bytes (payloads are below 2^28 bytes).
	maxFrameHeaderLen = 1 + 4
	// maxPayloadLimit is the upper bound for any configured limit.
	maxPayloadLimit = 1<<28 - 1
)

// Defaults for Limits.
const (
	DefaultMaxHeadSize    = 64 << 10
	DefaultMaxHeaderCount = 256
	DefaultMaxDataSize    = 256 << 10
)

// DefaultLimits returns the limits a zero Limits stands for.
func DefaultLimits() Limits {
	return Limits{
		MaxHeadSize:    DefaultMaxHeadSize,
		MaxHeaderCount: DefaultMaxHeaderCount,
		MaxDataSize:    DefaultMaxDataSize,
	}
}

// withDefaults fills zero fields with their defaults. It also replaces a
// negative field with its default and caps a field at maxPayloadLimit, so
// that a Limits nobody validated can never turn a length check off.
func (l Limits) withDefaults() Limits {
	fix := func(v *int, def int) {
		switch {
		case *v <= 0:
			*v = def
		case *v > maxPayloadLimit:
			*v = maxPayloadLimit
		}
	}
	fix(&l.MaxHeadSize, DefaultMaxHeadSize)
	fix(&l.MaxHeaderCount, DefaultMaxHeaderCount)
	fix(&l.MaxDataSize, DefaultMaxDataSize)
	return l
}

// Validate reports the first field that is out of range. Zero is valid: it
// means the default.
func (l Limits) Validate() error {
	for _, f := range []struct {
		name     string
		val, min int
	}{
		{"max_head_size", l.MaxHeadSize, 1 << 10},
		{"max_header_count", l.MaxHeaderCount, 16},
		{"max_data_size", l.MaxDataSize, 1 << 10},
	} {
		if f.val != 0 && (f.val < f.min || f.val > maxPayloadLimit) {
			return fmt.Errorf("limits: %s = %d: want %d to %d", f.name, f.val, f.min, maxPayloadLimit)
		}
	}
	return nil
}

// payloadLimit is the largest payload a frame of type t may have.
func (l Limits) payloadLimit(t FrameType) int {
	switch t {
	case FrameHead, FrameEnd:
		return l.MaxHeadSize
	case FrameData:
		return l.MaxDataSize
	case FrameReset:
		return MaxResetSize
	default:
		return MaxControlSize
	}
}
