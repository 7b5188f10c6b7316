package apierror

import "testing"

func TestBody(t *testing.T) {
	tests := []struct {
		name                      string
		typ, code, param, message string
		want                      string
	}{
		{"all fields", TypeInvalidRequest, "invalid_api_key", "model", "bad key",
			`{"error":{"message":"bad key","type":"invalid_request_error","param":"model","code":"invalid_api_key"}}` + "\n"},
		{"empty code and param are null", TypeServer, "", "", "down",
			`{"error":{"message":"down","type":"server_error","param":null,"code":null}}` + "\n"},
		{"message is escaped", TypePermission, "x", "", `say "<hi>"`,
			`{"error":{"message":"say \"\u003chi\u003e\"","type":"permission_error","param":null,"code":"x"}}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(Body(tt.typ, tt.code, tt.param, tt.message)); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
