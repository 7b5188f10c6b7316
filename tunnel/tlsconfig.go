package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/airlock-proxy/airlock/proto"
)

// TLS alerts (RFC 8446, section 6.2) that a QUIC peer sends as CRYPTO_ERROR
// 0x100+alert (RFC 9001, section 4.8).
const (
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateRevoked     = 44
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
	alertAccessDenied           = 49
)

// clientTLSConfig returns the edge's TLS settings: TLS 1.3, ALPN airlock/1,
// our certificate, and the relay's key checked against the pin instead of a
// CA chain.
func clientTLSConfig(id *Identity, pin string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{proto.ALPN},
		Certificates: []tls.Certificate{id.Certificate()},
		// The relay is identified by its key alone: no CA chain or host
		// name is checked, VerifyPeerCertificate compares the pin.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			got, err := peerFingerprint(raw)
			if err != nil {
				return err
			}
			if got != pin {
				return &peerError{
					msg:      fmt.Sprintf("relay key %s does not match the pinned key %s", got, pin),
					sentinel: ErrPinMismatch,
					alert:    alertBadCertificate,
				}
			}
			return nil
		},
	}
}

// serverTLSConfig returns the relay's TLS settings: TLS 1.3, ALPN airlock/1,
// our certificate, and a client certificate required, whose key authorize
// must know. An unknown key fails the handshake with an access_denied alert,
// so the edge learns why; refused gets the edge's address and that error
// first, so that the relay has counted and logged the refusal before the
// edge can know of it. For the address, each handshake runs on a copy of
// the settings made by GetConfigForClient (quic-go copies them per
// connection anyway).
func serverTLSConfig(id *Identity, authorize func(string) (string, []string, error), refused func(remote net.Addr, err error)) *tls.Config {
	base := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{proto.ALPN},
		Certificates: []tls.Certificate{id.Certificate()},
		ClientAuth:   tls.RequireAnyClientCert,
	}
	conf := base.Clone()
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		var remote net.Addr
		if hello.Conn != nil {
			remote = hello.Conn.RemoteAddr()
		}
		c := base.Clone()
		c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			fp, err := peerFingerprint(raw)
			if err != nil {
				return err
			}
			if _, _, err := authorize(fp); err != nil {
				pe := &peerError{
					msg:      fmt.Sprintf("edge key %s is not authorized: %v", fp, err),
					sentinel: ErrUnknownPeer,
					alert:    alertAccessDenied,
					key:      fp,
				}
				refused(remote, pe)
				return pe
			}
			return nil
		}
		return c, nil
	}
	return conf
}

// peerError is a refusal of the peer's identity. It wraps a sentinel for
// callers and a TLS alert, which crypto/tls and quic-go turn into the
// CRYPTO_ERROR code the peer receives.
type peerError struct {
	msg      string
	sentinel error
	alert    tls.AlertError
	key      string // the refused edge key, on the relay
}

func (e *peerError) Error() string { return e.msg }
func (e *peerError) Unwrap() []error {
	if e.alert == 0 {
		return []error{e.sentinel}
	}
	return []error{e.sentinel, e.alert}
}

// handshakeError explains why a connection attempt failed, in the terms of
// airlock's keys: the relay's key did not match the pin, or the relay
// refused this edge's key. Other errors come back as they are.
func handshakeError(err error, ownKey string) error {
	var pe *peerError
	if errors.As(err, &pe) {
		return pe
	}
	if refusedByPeer(err) {
		return &peerError{
			msg: fmt.Sprintf("relay refused this edge's key %s: add it to the relay's [[edge]] list (%v)",
				ownKey, err),
			sentinel: ErrUnknownPeer,
		}
	}
	return err
}

// refusedByPeer reports whether err is the peer's TLS alert refusing our
// certificate: over QUIC a CRYPTO_ERROR, over TCP a "remote error" read
// from the TLS connection (TLS 1.3 sends it after the client's handshake is
// done, so it arrives with the first read).
func refusedByPeer(err error) bool {
	return peerAlert(err, alertBadCertificate, alertCertificateUnknown, alertAccessDenied)
}
