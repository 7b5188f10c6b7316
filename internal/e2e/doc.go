// Package e2e holds the end-to-end tests: the official OpenAI Go client
// talking to an edge, through a real QUIC tunnel on loopback, to a relay and
// the built-in test upstream, all started by package devstack exactly as
// `airlock dev` starts them. It has no code of its own.
package e2e
