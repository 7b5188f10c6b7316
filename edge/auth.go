package edge

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
)

// Client keys are "sk-airlock-" and 43 base64url characters (32 random
// bytes), so that secret scanners and people can tell them from upstream keys.
const (
	clientKeyPrefix = "sk-airlock-"
	keyHashPrefix   = "sha256:"
)

// NewClientKey makes a new random client key and returns it with its hash,
// the value of a [[client]] table's key_hash. The key is shown to the user
// once; the edge stores only the hash.
func NewClientKey() (key, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("making a client key: %w", err)
	}
	key = clientKeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return key, HashClientKey(key), nil
}

// HashClientKey returns "sha256:" and the lowercase hex SHA-256 of key, the
// form a client key is stored in.
func HashClientKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return keyHashPrefix + hex.EncodeToString(sum[:])
}

// parseKeyHash decodes a key_hash value. Hex digits of either case are
// accepted.
func parseKeyHash(s string) ([32]byte, error) {
	var sum [32]byte
	rest, ok := strings.CutPrefix(s, keyHashPrefix)
	if !ok || len(rest) != 2*len(sum) {
		return sum, errors.New(`want "sha256:" and 64 hex digits (airlock keygen -client prints one)`)
	}
	if _, err := hex.Decode(sum[:], []byte(rest)); err != nil {
		return sum, errors.New(`want "sha256:" and 64 hex digits (airlock keygen -client prints one)`)
	}
	return sum, nil
}

// clientPolicy is what the edge knows about one client.
type clientPolicy struct {
	name string
	// upstreams lists the upstreams the client may use; empty means any.
	upstreams []string
	// inFlight caps the client's exchanges in flight.
	inFlight slots
}

// slots counts one client's exchanges in flight against its cap.
type slots struct {
	max int64
	// n is shared by the client's policies before and after a reload, so
	// that exchanges that started before it still count.
	n *atomic.Int64
}

// acquire takes a slot, or reports false when all max are taken.
func (s slots) acquire() bool {
	if s.n.Add(1) > s.max {
		s.n.Add(-1)
		return false
	}
	return true
}

// release gives back a slot that acquire took.
func (s slots) release() { s.n.Add(-1) }

// counters are the in-flight counts of the clients by name, and of the
// anonymous ones under "": kept across reloads.
type counters map[string]*atomic.Int64

// slotsFor returns name's slots with cap max, reusing the counter of prev
// (the running configuration's counters; nil at start) and recording it in
// next.
func slotsFor(name string, max int, prev, next counters) slots {
	n := prev[name]
	if n == nil {
		n = new(atomic.Int64)
	}
	next[name] = n
	return slots{max: int64(max), n: n}
}

// allows reports whether the client may use upstream u.
func (p *clientPolicy) allows(u string) bool {
	if p == nil || len(p.upstreams) == 0 {
		return true
	}
	for _, a := range p.upstreams {
		if a == u {
			return true
		}
	}
	return false
}

// pickUpstream returns the upstream a request goes to: the requested one
// (from Airlock-Upstream) if the client may use it, else the edge's default
// if allowed, else the client's first. ok is false when the requested
// upstream is not allowed. An empty result means the relay's default.
func (p *clientPolicy) pickUpstream(requested, edgeDefault string) (upstream string, ok bool) {
	if requested != "" {
		return requested, p.allows(requested)
	}
	if p == nil || len(p.upstreams) == 0 || (edgeDefault != "" && p.allows(edgeDefault)) {
		return edgeDefault, true
	}
	return p.upstreams[0], true
}

// keyring maps client keys to clients by their hashes.
type keyring struct {
	entries []keyEntry
}

type keyEntry struct {
	hash   [32]byte
	client *clientPolicy
}

// newKeyring builds the keyring of validated client configs; each client
// may have maxConcurrent exchanges in flight unless its own table says
// otherwise, counted in prev's counter of its name if it has one.
func newKeyring(clients []ClientConfig, maxConcurrent int, prev, next counters) (*keyring, error) {
	k := &keyring{entries: make([]keyEntry, 0, len(clients))}
	for _, cl := range clients {
		sum, err := parseKeyHash(cl.KeyHash)
		if err != nil {
			return nil, fmt.Errorf("client %q: key_hash: %w", cl.Name, err)
		}
		k.entries = append(k.entries, keyEntry{hash: sum, client: &clientPolicy{
			name:      cl.Name,
			upstreams: append([]string(nil), cl.Upstreams...),
			inFlight:  slotsFor(cl.Name, cmp.Or(cl.MaxConcurrent, maxConcurrent), prev, next),
		}})
	}
	return k, nil
}

// lookup returns the client whose key is key, or nil. It compares the key's
// hash with every entry in constant time, so that neither the position of a
// match nor a matching prefix shows in the timing.
func (k *keyring) lookup(key string) *clientPolicy {
	sum := sha256.Sum256([]byte(key))
	var found *clientPolicy
	for i := range k.entries {
		if subtle.ConstantTimeCompare(sum[:], k.entries[i].hash[:]) == 1 {
			found = k.entries[i].client
		}
	}
	return found
}

// requestKey returns the client key a request carries: the token of an
// "Authorization: Bearer" header (OpenAI SDKs), else the "api-key" header
// (Azure OpenAI SDKs). It returns "" when there is none.
func requestKey(h http.Header) string {
	if v := h.Get("Authorization"); v != "" {
		scheme, token, _ := strings.Cut(strings.TrimSpace(v), " ")
		if strings.EqualFold(scheme, "Bearer") {
			if token = strings.TrimSpace(token); token != "" {
				return token
			}
		}
	}
	return strings.TrimSpace(h.Get("Api-Key"))
}
