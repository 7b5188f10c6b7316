package proto

import (
	"strings"
	"testing"
)

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		name    string
		lim     Limits
		wantErr string // a substring naming the field; "" means valid
	}{
		{"zero means defaults", Limits{}, ""},
		{"defaults", DefaultLimits(), ""},
		{"minimums", Limits{MaxHeadSize: 1 << 10, MaxHeaderCount: 16, MaxDataSize: 1 << 10}, ""},
		{"maximums", Limits{MaxHeadSize: maxPayloadLimit, MaxHeaderCount: maxPayloadLimit, MaxDataSize: maxPayloadLimit}, ""},
		{"head size too small", Limits{MaxHeadSize: 1<<10 - 1}, "max_head_size"},
		{"head size negative", Limits{MaxHeadSize: -1}, "max_head_size"},
		{"head size too large", Limits{MaxHeadSize: maxPayloadLimit + 1}, "max_head_size"},
		{"header count too small", Limits{MaxHeaderCount: 15}, "max_header_count"},
		{"header count negative", Limits{MaxHeaderCount: -5}, "max_header_count"},
		{"data size too small", Limits{MaxDataSize: 1}, "max_data_size"},
		{"data size too large", Limits{MaxDataSize: 1 << 28}, "max_data_size"},
		{"data size negative", Limits{MaxDataSize: -1 << 20}, "max_data_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.lim.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("got nil, want an error naming %s", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("got %q, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestDefaultLimits(t *testing.T) {
	if got, want := (Limits{}).withDefaults(), DefaultLimits(); got != want {
		t.Fatalf("zero Limits: got %+v, want %+v", got, want)
	}
	partial := Limits{MaxDataSize: 4 << 10}.withDefaults()
	if want := (Limits{MaxHeadSize: DefaultMaxHeadSize, MaxHeaderCount: DefaultMaxHeaderCount, MaxDataSize: 4 << 10}); partial != want {
		t.Fatalf("partial Limits: got %+v, want %+v", partial, want)
	}
}
