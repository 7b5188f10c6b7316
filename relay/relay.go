// Package relay is the upstream side of airlock: it accepts tunnel sessions
// from the edges whose keys it knows, turns each exchange stream into one HTTP
// request to a configured upstream API, and streams the answer back frame by
// frame as it arrives.
//
// The relay is the only part of airlock that holds upstream API keys. It
// trusts nothing the edge sends about where a request goes: the edge names an
// upstream and a path, and the relay joins that path under the upstream's
// configured base URL, so that scheme, host and port always come from the
// relay's own configuration (it is not an open proxy). The client's
// credentials are removed and the upstream's own are set.
//
// Nothing on the response path is buffered: each read from the upstream body
// becomes one DATA frame at once, so a server-sent event reaches the edge as
// soon as the upstream emits it. A failure after the response head is sent as
// a RESET, so that the edge never mistakes a cut body for a complete one. When
// the edge resets a stream (its client went away), the upstream request is
// cancelled at once: a generation that nobody reads must stop costing money.
//
// The pieces are [Config] (the relay's TOML file), [Handler] (one exchange per
// stream, usable with any tunnel.Server) and [Server] (the wiring of a
// tunnel listener, a Handler and the admin listener).
package relay
