package identity

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
)

// ErrInvalidCSR is wrapped by every SignCSR and ParseCSR error caused by the request itself.
var ErrInvalidCSR = errors.New("invalid certificate signing request")

// ParseCSR decodes a PEM certificate signing request, checks its signature and that its common
// name equals deviceName. Errors wrap ErrInvalidCSR.
func ParseCSR(csrPEM []byte, deviceName string) (*x509.CertificateRequest, error) {
	if msgs := k8svalidation.IsDNS1123Subdomain(deviceName); len(msgs) > 0 {
		return nil, fmt.Errorf("%w: device name %q is invalid: %s",
			ErrInvalidCSR, deviceName, msgs[0])
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: expected a PEM block of type CERTIFICATE REQUEST", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature check failed: %v", ErrInvalidCSR, err)
	}
	if cn := csr.Subject.CommonName; cn != deviceName {
		return nil, fmt.Errorf("%w: common name %q must equal the device name %q",
			ErrInvalidCSR, cn, deviceName)
	}
	return csr, nil
}

// SignCSR checks a PEM certificate signing request with ParseCSR and issues a client
// certificate for deviceName, returned in PEM form. The certificate's subject is only
// CN=deviceName, whatever else the request contains, and it is valid for client
// authentication for the CA's client validity period.
func (ca *CA) SignCSR(csrPEM []byte, deviceName string) ([]byte, error) {
	csr, err := ParseCSR(csrPEM, deviceName)
	if err != nil {
		return nil, fmt.Errorf("sign CSR: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: deviceName},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(ca.clientValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := ca.sign(tmpl, csr.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("sign CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
