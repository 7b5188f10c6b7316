// Package apierror encodes OpenAI's error JSON,
//
//	{"error":{"message":"...","type":"...","param":null,"code":"..."}}
//
// the one shape in which the edge, the relay and the test upstream answer a
// failure, so that every OpenAI SDK recognises it and shows the message.
package apierror

import "encoding/json"

// OpenAI error types. SDKs branch on the HTTP status; the type tells a human
// which side of the request was wrong.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypePermission     = "permission_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
)

type body struct {
	Error fields `json:"error"`
}

type fields struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Body returns the error JSON, ending in a newline. An empty code or param is
// sent as null, as OpenAI sends them.
func Body(typ, code, param, message string) []byte {
	f := fields{Message: message, Type: typ}
	if code != "" {
		f.Code = &code
	}
	if param != "" {
		f.Param = &param
	}
	b, err := json.Marshal(body{Error: f})
	if err != nil {
		// Only strings are encoded, which cannot fail.
		panic("apierror: encoding error JSON: " + err.Error())
	}
	return append(b, '\n')
}
