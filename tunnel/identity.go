package tunnel

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/airlock-proxy/airlock/internal/keyfile"
)

// Identity is one side's key pair and the self-signed certificate it presents
// in the tunnel's TLS handshake. Peers are identified by the SHA-256 of the
// public key (its SPKI), not by the certificate, so no CA is involved and the
// certificate can be regenerated at every start.
type Identity struct {
	key  ed25519.PrivateKey
	cert tls.Certificate
	fp   string
}

// GenerateIdentity makes a new Ed25519 identity.
func GenerateIdentity() (*Identity, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	return newIdentity(key)
}

// LoadIdentity reads a private key written by [Identity.Save] (PEM, PKCS #8,
// Ed25519). Like ssh, it refuses a key file that group or others may read or
// change (see package internal/keyfile: mode 0600 or 0400, or 0640 when root
// owns the file and hands it to a service user's group); the error names the
// file and its mode and gives the chmod, and wraps [keyfile.ErrTooOpen]. No
// check is made on Windows, where mode bits do not govern access.
func LoadIdentity(path string) (*Identity, error) {
	b, err := keyfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("loading key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("loading key %s: no PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("loading key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("loading key %s: %T is not an Ed25519 key", path, k)
	}
	return newIdentity(ek)
}

func newIdentity(key ed25519.PrivateKey) (*Identity, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "airlock"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"airlock"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate: %w", err)
	}
	fp, err := Fingerprint(key.Public())
	if err != nil {
		return nil, err
	}
	return &Identity{
		key:  key,
		cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		fp:   fp,
	}, nil
}

// Save writes the private key to path with mode 0600. It refuses to
// overwrite an existing file.
func (id *Identity) Save(path string) error {
	der, err := x509.MarshalPKCS8PrivateKey(id.key)
	if err != nil {
		return fmt.Errorf("saving key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("saving key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("saving key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("saving key %s: %w", path, err)
	}
	return nil
}

// Fingerprint returns the identity's public key fingerprint,
// "sha256:<base64url>".
func (id *Identity) Fingerprint() string { return id.fp }

// Certificate returns the TLS certificate to present.
func (id *Identity) Certificate() tls.Certificate { return id.cert }

// Fingerprint returns "sha256:" and the unpadded base64url SHA-256 of the
// public key's DER SubjectPublicKeyInfo.
func Fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("fingerprinting key: %w", err)
	}
	sum := sha256.Sum256(der)
	return fingerprintPrefix + base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

const fingerprintPrefix = "sha256:"

// ParseFingerprint checks that s is a well-formed fingerprint and returns it
// in canonical form.
func ParseFingerprint(s string) (string, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, fingerprintPrefix)
	if !ok {
		return "", fmt.Errorf("key fingerprint %q: want \"sha256:\" and 43 base64url characters", s)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("key fingerprint %q: want \"sha256:\" and 43 base64url characters", s)
	}
	return s, nil
}

// peerFingerprint returns the fingerprint of the leaf certificate a peer
// presented in a TLS handshake.
func peerFingerprint(rawCerts [][]byte) (string, error) {
	if len(rawCerts) == 0 {
		return "", errors.New("peer presented no certificate")
	}
	c, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return "", fmt.Errorf("parsing peer certificate: %w", err)
	}
	return certFingerprint([]*x509.Certificate{c})
}

// certFingerprint returns the fingerprint of the first certificate of a
// verified TLS connection's peer chain.
func certFingerprint(certs []*x509.Certificate) (string, error) {
	if len(certs) == 0 {
		return "", errors.New("peer presented no certificate")
	}
	return Fingerprint(certs[0].PublicKey)
}
