package proto

import (
	"bytes"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestControlRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		msg  Message
	}{
		{"hello", &Hello{Version: ProtocolVersion, EdgeName: "edge-1", Software: "airlock/0.1 (linux; go1.26)", Features: []string{"upgrade", "trailers"}}},
		{"hello zero", &Hello{}},
		{"hello future version", &Hello{Version: 1 << 40}},
		{"welcome", &Welcome{Version: ProtocolVersion, RelayName: "relay-eu", SessionID: "s-0001", Upstreams: []string{"openai", "anthropic"}, MaxStreams: 10000}},
		{"welcome zero", &Welcome{}},
		{"ping 0", &Ping{}},
		{"ping max", &Ping{ID: 1<<64 - 1}},
		{"pong", &Pong{ID: 42}},
		{"goaway", &GoAway{Reason: "relay shutting down"}},
		{"goaway empty", &GoAway{}},
		{"stream reset", &StreamReset{StreamID: 1<<62 - 1, Code: CodeRefused}},
		{"stream reset zero", &StreamReset{}},
		{"stop sending", &StreamReset{StreamID: 3, Code: CodeCancel, StopSending: true}},
	}

	// Each message alone, through the decoder.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeMessage(tt.msg.frameType(), tt.msg.appendTo(nil))
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			if !reflect.DeepEqual(got, tt.msg) {
				t.Fatalf("got %#v, want %#v", got, tt.msg)
			}
		})
	}

	// All of them in sequence over one stream, one Write per message.
	var wire writeRecorder
	cw := NewControlWriter(&wire)
	for _, tt := range tests {
		if err := cw.WriteMessage(tt.msg); err != nil {
			t.Fatalf("WriteMessage(%s): %v", tt.name, err)
		}
	}
	if wire.calls != len(tests) {
		t.Fatalf("underlying writes: got %d, want %d", wire.calls, len(tests))
	}
	cr := NewControlReader(&wire)
	for _, tt := range tests {
		got, err := cr.ReadMessage()
		if err != nil {
			t.Fatalf("ReadMessage(%s): %v", tt.name, err)
		}
		if !reflect.DeepEqual(got, tt.msg) {
			t.Fatalf("%s: got %#v, want %#v", tt.name, got, tt.msg)
		}
	}
	if _, err := cr.ReadMessage(); err != io.EOF {
		t.Fatalf("at the end: got %v, want io.EOF", err)
	}
}

func TestControlReaderErrors(t *testing.T) {
	features := func(n int) []byte {
		var b []byte
		for range n {
			b = append(b, rawStr(tagHelloFeature, "f")...)
		}
		return b
	}
	ping := rawFrame(FramePing, rawUint(tagPingID, 7))
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"clean end", nil, io.EOF},
		{"type byte only", []byte{byte(FramePing)}, io.ErrUnexpectedEOF},
		{"truncated length", []byte{byte(FramePing), 0x80}, io.ErrUnexpectedEOF},
		{"payload cut", ping[:len(ping)-1], io.ErrUnexpectedEOF},
		{"over the limit", rawFrame(FrameGoAway, rawStr(tagGoAwayReason, strings.Repeat("r", MaxControlSize))), ErrProtocol},
		{"HEAD on the control stream", rawFrame(FrameHead, nil), ErrProtocol},
		{"HEAD with payload on the control stream", reqHeadFrame, ErrProtocol},
		{"DATA on the control stream", rawFrame(FrameData, []byte("x")), ErrProtocol},
		{"END on the control stream", endFrame, ErrProtocol},
		{"RESET on the control stream", rawReset(1, ""), ErrProtocol},
		{"unknown type", rawFrame(0x7f, nil), ErrProtocol},
		{"HELLO version bad number", rawFrame(FrameHello, rawField(tagHelloVersion, []byte{0x80})), ErrProtocol},
		{"HELLO version trailing bytes", rawFrame(FrameHello, rawField(tagHelloVersion, []byte{1, 1})), ErrProtocol},
		{"HELLO empty feature", rawFrame(FrameHello, rawStr(tagHelloFeature, "")), ErrProtocol},
		{"HELLO feature with space", rawFrame(FrameHello, rawStr(tagHelloFeature, "a b")), ErrProtocol},
		{"HELLO too many features", rawFrame(FrameHello, features(maxListItems+1)), ErrProtocol},
		{"WELCOME upstream with control char", rawFrame(FrameWelcome, rawStr(tagWelcomeUpstream, "open\nai")), ErrProtocol},
		{"WELCOME max streams bad number", rawFrame(FrameWelcome, rawField(tagWelcomeMaxStreams, nil)), ErrProtocol},
		{"PING id bad number", rawFrame(FramePing, rawField(tagPingID, []byte{0xff})), ErrProtocol},
		{"PONG field length beyond payload", rawFrame(FramePong, cat(uv(tagPingID), uv(5), byte(1))), ErrProtocol},
		{"GOAWAY truncated tag", rawFrame(FrameGoAway, []byte{0x80}), ErrProtocol},
		{"STREAM_RESET code out of range", rawFrame(FrameStreamReset, rawUint(tagStreamResetCode, 1<<32)), ErrProtocol},
		{"STREAM_RESET bad id", rawFrame(FrameStreamReset, rawField(tagStreamResetID, []byte{0x80})), ErrProtocol},
		{"STREAM_RESET stop sending 2", rawFrame(FrameStreamReset, rawUint(tagStreamResetStopSending, 2)), ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewControlReader(bytes.NewReader(tt.in)).ReadMessage()
			checkErr(t, err, tt.want)
		})
	}
}

func TestControlListLimit(t *testing.T) {
	var b []byte
	for range maxListItems {
		b = append(b, rawStr(tagWelcomeUpstream, "u")...)
	}
	m, err := DecodeMessage(FrameWelcome, b)
	if err != nil {
		t.Fatalf("%d upstreams: got %v, want nil", maxListItems, err)
	}
	if got := len(m.(*Welcome).Upstreams); got != maxListItems {
		t.Fatalf("upstreams: got %d, want %d", got, maxListItems)
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	tests := []struct {
		name string
		t    FrameType
		p    []byte
	}{
		{"HEAD", FrameHead, reqPayload()},
		{"DATA", FrameData, []byte("x")},
		{"END", FrameEnd, nil},
		{"RESET", FrameReset, rawUint(tagResetCode, 1)},
		{"unknown", 0xff, nil},
		{"payload over the limit", FrameGoAway, make([]byte, MaxControlSize+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeMessage(tt.t, tt.p)
			checkErr(t, err, ErrProtocol)
			if m != nil {
				t.Fatalf("got message %#v with the error, want nil", m)
			}
		})
	}
}

func TestControlWriterOversizedWritesNothing(t *testing.T) {
	var wire bytes.Buffer
	cw := NewControlWriter(&wire)
	err := cw.WriteMessage(&GoAway{Reason: strings.Repeat("r", MaxControlSize)})
	if err == nil {
		t.Fatal("got nil, want a size error")
	}
	if wire.Len() != 0 {
		t.Fatalf("wrote %d bytes, want 0", wire.Len())
	}
	// The writer is still usable.
	if err := cw.WriteMessage(&Ping{ID: 1}); err != nil {
		t.Fatalf("WriteMessage after failure: %v", err)
	}
	m, err := NewControlReader(&wire).ReadMessage()
	if err != nil || !reflect.DeepEqual(m, &Ping{ID: 1}) {
		t.Fatalf("got (%#v, %v), want (&Ping{ID: 1}, nil)", m, err)
	}
}

// TestControlWriterConcurrent: the ping loop and a drain may write at once;
// every message must arrive whole.
func TestControlWriterConcurrent(t *testing.T) {
	const writers, each = 8, 200
	var wire bytes.Buffer
	cw := NewControlWriter(&wire)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				var m Message = &Ping{ID: uint64(g*each + i)}
				if i%2 == 1 {
					m = &GoAway{Reason: strings.Repeat("x", i)}
				}
				if err := cw.WriteMessage(m); err != nil {
					t.Errorf("WriteMessage: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()

	cr := NewControlReader(&wire)
	pings := map[uint64]bool{}
	goaways := 0
	for {
		m, err := cr.ReadMessage()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("ReadMessage: %v", err)
		}
		switch m := m.(type) {
		case *Ping:
			if pings[m.ID] {
				t.Fatalf("PING %d twice", m.ID)
			}
			pings[m.ID] = true
		case *GoAway:
			goaways++
		}
	}
	if len(pings) != writers*each/2 || goaways != writers*each/2 {
		t.Fatalf("got %d PINGs and %d GOAWAYs, want %d of each", len(pings), goaways, writers*each/2)
	}
}
