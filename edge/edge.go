// Package edge is airlock's client-facing side: an HTTP server on the OpenAI
// URL space (/v1/...) that checks each client's own key and carries every
// HTTP exchange as one tunnel stream to a relay, which calls the upstream.
//
// The edge never holds an upstream API key. It removes the client's
// credentials and hop-by-hop headers, sends the request as a proto HEAD, the
// body as DATA frames (one frame per read of the client's body) and END, and
// turns the relay's answer back into an HTTP response. Both directions stream
// at once: a request body is still being sent while the response may already
// flow, and every DATA frame of the response is written and flushed to the
// client at once, so that a server-sent event reaches the client the moment
// the upstream emits it, never merged with the next one.
//
// Failures before the response head become OpenAI-shaped error JSON with a
// fitting status (401, 403, 404, 413, 502, 503 with Retry-After, 504). A
// failure after the head aborts the client connection, so that no client
// mistakes a cut stream for a complete one. When the client goes away, the
// edge resets the stream with [proto.CodeCancel] and the relay cancels the
// upstream request.
//
// [NewHandler] is the proxy itself, over any [tunnel.Opener]; [Server] wires
// it to a [tunnel.Client], an HTTP listener and the admin listener.
package edge
