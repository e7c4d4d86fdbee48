package agentapi

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/server/identity"
)

func TestDeviceServiceOtherDeviceDenied(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("device-a")
	e.createDevice("device-b")
	e.render("device-b", "secret-b")
	before := e.device("device-b")
	client := e.deviceClient(e.deviceCert("device-a"))
	ctx := t.Context()

	_, getErr := client.GetDevice(ctx, connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: "device-b"}))
	_, renderedErr := client.GetRenderedDevice(ctx,
		connect.NewRequest(&fleetplanev1.GetRenderedDeviceRequest{Name: "device-b"}))
	_, updateErr := client.UpdateDeviceStatus(ctx, connect.NewRequest(&fleetplanev1.UpdateDeviceStatusRequest{
		Name:   "device-b",
		Status: &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Error"}},
	}))
	for name, err := range map[string]error{
		"GetDevice": getErr, "GetRenderedDevice": renderedErr, "UpdateDeviceStatus": updateErr,
	} {
		if connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("%s of another device: error = %v, want PERMISSION_DENIED", name, err)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "device-a") || strings.Contains(msg, "device-b") {
			t.Errorf("%s error %q names a device", name, msg)
		}
	}
	after := e.device("device-b")
	if after.GetMetadata().GetResourceVersion() != before.GetMetadata().GetResourceVersion() {
		t.Error("device-b changed after a denied status update")
	}
}

func TestDeviceServiceOwnDevice(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("device-a")
	v1 := e.render("device-a", "a")
	client := e.deviceClient(e.deviceCert("device-a"))
	ctx := t.Context()

	got, err := client.GetDevice(ctx, connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: "device-a"}))
	if err != nil {
		t.Fatalf("GetDevice of own device: %v", err)
	}
	if got.Msg.GetDevice().GetMetadata().GetName() != "device-a" {
		t.Errorf("GetDevice returned %q", got.Msg.GetDevice().GetMetadata().GetName())
	}
	rendered, err := client.GetRenderedDevice(ctx,
		connect.NewRequest(&fleetplanev1.GetRenderedDeviceRequest{Name: "device-a"}))
	if err != nil {
		t.Fatalf("GetRenderedDevice of own device: %v", err)
	}
	if rendered.Msg.GetRendered().GetRenderedVersion() != v1 {
		t.Errorf("rendered version = %q, want %s", rendered.Msg.GetRendered().GetRenderedVersion(), v1)
	}
	updated, err := client.UpdateDeviceStatus(ctx, connect.NewRequest(&fleetplanev1.UpdateDeviceStatusRequest{
		Name: "device-a",
		Status: &fleetplanev1.DeviceStatus{
			Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Online"},
			Config:  &fleetplanev1.DeviceConfigStatus{RenderedVersion: "42"},
		},
	}))
	if err != nil {
		t.Fatalf("UpdateDeviceStatus of own device: %v", err)
	}
	status := updated.Msg.GetDevice().GetStatus()
	if status.GetSummary().GetStatus() != "Online" {
		t.Errorf("summary = %q, want Online", status.GetSummary().GetStatus())
	}
	if status.GetConfig().GetRenderedVersion() != "" {
		t.Errorf("rendered version = %q, want it left to acks", status.GetConfig().GetRenderedVersion())
	}

	_, err = client.UpdateDeviceStatus(ctx, connect.NewRequest(&fleetplanev1.UpdateDeviceStatusRequest{
		Name:            "device-a",
		Status:          &fleetplanev1.DeviceStatus{},
		ResourceVersion: "1",
	}))
	if connect.CodeOf(err) != connect.CodeAborted {
		t.Errorf("UpdateDeviceStatus with a stale resource version: error = %v, want ABORTED", err)
	}
}

func TestDeviceServiceOtherMethodsUnimplemented(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("device-a")
	client := e.deviceClient(e.deviceCert("device-a"))
	ctx := t.Context()
	_, listErr := client.ListDevices(ctx, connect.NewRequest(&fleetplanev1.ListDevicesRequest{}))
	_, deleteErr := client.DeleteDevice(ctx, connect.NewRequest(&fleetplanev1.DeleteDeviceRequest{Name: "device-a"}))
	_, updateErr := client.UpdateDevice(ctx, connect.NewRequest(&fleetplanev1.UpdateDeviceRequest{
		Device: &fleetplanev1.Device{Metadata: &fleetplanev1.ObjectMeta{Name: "device-a"}},
	}))
	for name, err := range map[string]error{
		"ListDevices": listErr, "DeleteDevice": deleteErr, "UpdateDevice": updateErr,
	} {
		if connect.CodeOf(err) != connect.CodeUnimplemented {
			t.Errorf("%s: error = %v, want UNIMPLEMENTED", name, err)
		}
	}
}

func TestStreamOnlyOwnDevice(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("device-a")
	e.createDevice("device-b")
	e.render("device-b", "b1")
	e.render("device-b", "b2")
	va := e.render("device-a", "a1")
	a := e.connect("device-a", "")
	spec := a.nextSpec()
	if spec.GetRenderedVersion() != va || string(spec.GetFiles()[0].GetContent()) != "a1" {
		t.Errorf("device-a received version %s with %q, want its own version %s",
			spec.GetRenderedVersion(), spec.GetFiles()[0].GetContent(), va)
	}
	// An ack of device-b's version on device-a's stream cannot touch device-b.
	a.ack("2")
	a.sendStatus(&fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Error"}})
	e.waitDevice("device-a", "status written", func(d *fleetplanev1.Device) bool {
		return d.GetStatus().GetSummary().GetStatus() == "Error"
	})
	if status := e.device("device-b").GetStatus(); status.GetSummary() != nil || status.GetConfig() != nil {
		t.Errorf("device-b status changed through device-a's stream: %v", status)
	}
}

func TestNoCertificateUnauthenticated(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("device-a")
	a := e.connectWith(e.agentClient(), "")
	err := a.expectEnd()
	if err.Code() != connect.CodeUnauthenticated {
		t.Fatalf("stream without a certificate ended with %v, want UNAUTHENTICATED", err)
	}
	if !strings.Contains(err.Message(), "enroll") {
		t.Errorf("message %q does not tell the agent to enroll", err.Message())
	}
	_, getErr := e.deviceClient().GetDevice(t.Context(),
		connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: "device-a"}))
	if connect.CodeOf(getErr) != connect.CodeUnauthenticated {
		t.Errorf("GetDevice without a certificate: error = %v, want UNAUTHENTICATED", getErr)
	}
}

// signedCert returns a client certificate for cn signed by the CA whose files are in caDir,
// valid from notBefore to notAfter.
func signedCert(t *testing.T, caDir, cn string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(caDir, "ca.crt"), filepath.Join(caDir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, _ := newCSR(t, cn)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &key.PublicKey, pair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestForeignAndExpiredCertsRejected(t *testing.T) {
	e := newEnv(t, nil)
	e.createDevice("device-a")
	foreignDir := t.TempDir()
	if _, err := identity.LoadOrCreateCA(foreignDir); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cases := map[string]struct {
		cert tls.Certificate
		want string
	}{
		"foreign": {signedCert(t, foreignDir, "device-a", now.Add(-time.Hour), now.Add(time.Hour)),
			"unknown certificate authority"},
		"expired": {signedCert(t, e.caDir, "device-a", now.Add(-48*time.Hour), now.Add(-24*time.Hour)),
			"expired certificate"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := handshakeError(t, e, tc.cert)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("handshake error = %v, want %q", err, tc.want)
			}
			client := e.deviceClient(tc.cert)
			_, err = client.GetDevice(t.Context(),
				connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: "device-a"}))
			if err == nil {
				t.Error("GetDevice with the certificate succeeded")
			}
		})
	}
}

// handshakeError connects to the agent port with cert and returns the TLS error. With TLS 1.3
// the server checks the client certificate after the client has finished its side of the
// handshake, so the server's alert arrives on the first read. A client that writes first,
// such as an HTTP/2 client, may see a broken pipe instead.
func handshakeError(t *testing.T, e *env, cert tls.Certificate) error {
	t.Helper()
	addr := strings.TrimPrefix(e.url, "https://")
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: e.ca.Pool(), Certificates: []tls.Certificate{cert}})
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(waitTimeout))
	_, err = conn.Read(make([]byte, 1))
	return err
}
