package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/encoding/protojson"
)

// setOwner makes owner the device's owner directly in the store, as the selector task does.
func setOwner(t *testing.T, ts *testServer, name, owner string) {
	t.Helper()
	err := ts.store.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		obj, err := tx.Get(ctx, store.KindDevice, name)
		if err != nil {
			return err
		}
		d := obj.(*fleetplanev1.Device)
		d.Metadata.Owner = owner
		d.Metadata.Annotations = map[string]string{"fleetplane.dev/template-version": "v1"}
		_, err = tx.Update(ctx, d)
		return err
	})
	if err != nil {
		t.Fatalf("set owner: %v", err)
	}
}

func getDevice(t *testing.T, ts *testServer, name string) *fleetplanev1.Device {
	t.Helper()
	resp, err := ts.devices().GetDevice(context.Background(),
		connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: name}))
	if err != nil {
		t.Fatalf("GetDevice %s: %v", name, err)
	}
	return resp.Msg.GetDevice()
}

func TestOwnedDeviceSpecChange(t *testing.T) {
	ts := startServer(t, nil)
	createDevice(t, ts, newDevice("owned", nil))
	setOwner(t, ts, "owned", "Fleet/edge")
	ctx := context.Background()

	d := getDevice(t, ts, "owned")
	d.Spec.Os.Image = "os:other"
	_, err := ts.devices().UpdateDevice(ctx, connect.NewRequest(&fleetplanev1.UpdateDeviceRequest{Device: d}))
	wantCode(t, err, connect.CodeFailedPrecondition)
	if msg := err.(*connect.Error).Message(); !strings.Contains(msg, "Fleet/edge") {
		t.Errorf("message %q does not name the owner", msg)
	}

	d = getDevice(t, ts, "owned")
	d.Metadata.Labels = map[string]string{"zone": "b"}
	d.Metadata.ResourceVersion = ""
	resp, err := ts.devices().UpdateDevice(ctx, connect.NewRequest(&fleetplanev1.UpdateDeviceRequest{Device: d}))
	if err != nil {
		t.Fatalf("label change of an owned device: %v", err)
	}
	if got := resp.Msg.GetDevice().GetMetadata().GetLabels()["zone"]; got != "b" {
		t.Errorf("label zone = %q, want b", got)
	}
}

func TestServerFieldsOnCreate(t *testing.T) {
	ts := startServer(t, nil)
	d := newDevice("sneaky", nil)
	d.Metadata.Owner = "Fleet/evil"
	d.Metadata.Generation = 42
	d.Metadata.Annotations = map[string]string{"fleetplane.dev/x": "1", "user.example/y": "2"}
	d.Status = &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Online"}}

	got := createDevice(t, ts, d)
	if got.GetMetadata().GetOwner() != "" {
		t.Errorf("owner = %q, want empty", got.GetMetadata().GetOwner())
	}
	if got.GetMetadata().GetGeneration() != 1 {
		t.Errorf("generation = %d, want 1", got.GetMetadata().GetGeneration())
	}
	if _, ok := got.GetMetadata().GetAnnotations()["fleetplane.dev/x"]; ok {
		t.Error("server annotation was stored on create")
	}
	if got.GetMetadata().GetAnnotations()["user.example/y"] != "2" {
		t.Error("user annotation was dropped")
	}
	if got.GetStatus().GetSummary().GetStatus() == "Online" {
		t.Error("status was stored on create")
	}
}

func TestServerFieldsOnUpdate(t *testing.T) {
	ts := startServer(t, nil)
	createDevice(t, ts, newDevice("kept", nil))
	setOwner(t, ts, "kept", "Fleet/edge")

	d := getDevice(t, ts, "kept")
	d.Metadata.Owner = "Fleet/other"
	d.Metadata.Annotations = map[string]string{"fleetplane.dev/template-version": "forged"}
	d.Status = &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Online"}}
	resp, err := ts.devices().UpdateDevice(context.Background(),
		connect.NewRequest(&fleetplanev1.UpdateDeviceRequest{Device: d}))
	if err != nil {
		t.Fatalf("UpdateDevice: %v", err)
	}
	m := resp.Msg.GetDevice().GetMetadata()
	if m.GetOwner() != "Fleet/edge" {
		t.Errorf("owner = %q, want Fleet/edge", m.GetOwner())
	}
	if got := m.GetAnnotations()["fleetplane.dev/template-version"]; got != "v1" {
		t.Errorf("server annotation = %q, want v1", got)
	}
	if resp.Msg.GetDevice().GetStatus().GetSummary().GetStatus() == "Online" {
		t.Error("status was changed by UpdateDevice")
	}
}

func TestUpdateBadResourceVersion(t *testing.T) {
	ts := startServer(t, nil)
	d := createDevice(t, ts, newDevice("rv", nil))
	d.Metadata.ResourceVersion = "not-a-version"
	_, err := ts.devices().UpdateDevice(context.Background(),
		connect.NewRequest(&fleetplanev1.UpdateDeviceRequest{Device: d}))
	wantCode(t, err, connect.CodeInvalidArgument)
}

func TestUpdateDeviceStatus(t *testing.T) {
	ts := startServer(t, nil)
	created := createDevice(t, ts, newDevice("st", nil))
	ctx := context.Background()
	status := &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Online"}}

	resp, err := ts.devices().UpdateDeviceStatus(ctx, connect.NewRequest(
		&fleetplanev1.UpdateDeviceStatusRequest{Name: "st", Status: status}))
	if err != nil {
		t.Fatalf("UpdateDeviceStatus: %v", err)
	}
	if got := resp.Msg.GetDevice().GetStatus().GetSummary().GetStatus(); got != "Online" {
		t.Errorf("summary = %q, want Online", got)
	}
	_, err = ts.devices().UpdateDeviceStatus(ctx, connect.NewRequest(&fleetplanev1.UpdateDeviceStatusRequest{
		Name: "st", Status: status, ResourceVersion: created.GetMetadata().GetResourceVersion()}))
	wantCode(t, err, connect.CodeAborted)
	_, err = ts.devices().UpdateDeviceStatus(ctx, connect.NewRequest(
		&fleetplanev1.UpdateDeviceStatusRequest{Name: "missing", Status: status}))
	wantCode(t, err, connect.CodeNotFound)
}

func TestGetRenderedDeviceNotRendered(t *testing.T) {
	ts := startServer(t, nil)
	createDevice(t, ts, newDevice("r", nil))
	_, err := ts.devices().GetRenderedDevice(context.Background(),
		connect.NewRequest(&fleetplanev1.GetRenderedDeviceRequest{Name: "r"}))
	wantCode(t, err, connect.CodeNotFound)
}

// Secret values that must never leave the server.
const (
	secretPassword   = "s3cret-password"
	secretToken      = "s3cret-token"
	secretTLSKey     = "s3cret-tls-key"
	secretSSHKey     = "s3cret-ssh-key"
	secretPassphrase = "s3cret-passphrase"
)

func secretRepository() *fleetplanev1.Repository {
	return &fleetplanev1.Repository{
		Metadata: &fleetplanev1.ObjectMeta{Name: "repo"},
		Spec: &fleetplanev1.RepositorySpec{
			Url: "https://git.example.com/config.git", Type: "git",
			HttpConfig: &fleetplanev1.HttpConfig{Username: "u", Password: secretPassword,
				Token: secretToken, TlsKey: secretTLSKey},
			SshConfig: &fleetplanev1.SshConfig{SshPrivateKey: secretSSHKey,
				PrivateKeyPassphrase: secretPassphrase},
		},
	}
}

// checkNoSecret fails if any secret value appears in text.
func checkNoSecret(t *testing.T, where string, text string) {
	t.Helper()
	for _, s := range []string{secretPassword, secretToken, secretTLSKey, secretSSHKey, secretPassphrase} {
		if strings.Contains(text, s) {
			t.Errorf("%s contains secret %q", where, s)
		}
	}
}

func TestRepositorySecretsHidden(t *testing.T) {
	ts := startServer(t, nil)
	ts.srv.bookmarkInterval = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := ts.repositories()
	watch, err := client.WatchRepositories(ctx, connect.NewRequest(&fleetplanev1.WatchRepositoriesRequest{}))
	if err != nil {
		t.Fatalf("WatchRepositories: %v", err)
	}
	defer watch.Close()

	created, err := client.CreateRepository(ctx, connect.NewRequest(
		&fleetplanev1.CreateRepositoryRequest{Repository: secretRepository()}))
	if err != nil {
		t.Fatalf("CreateRepository: %v", err)
	}
	checkNoSecret(t, "create response", protojson.Format(created.Msg))
	got, err := client.GetRepository(ctx, connect.NewRequest(&fleetplanev1.GetRepositoryRequest{Name: "repo"}))
	if err != nil {
		t.Fatalf("GetRepository: %v", err)
	}
	checkNoSecret(t, "get response", protojson.Format(got.Msg))
	if got.Msg.GetRepository().GetSpec().GetHttpConfig().GetUsername() != "u" {
		t.Error("username was cleared, but it is not a secret")
	}
	list, err := client.ListRepositories(ctx, connect.NewRequest(&fleetplanev1.ListRepositoriesRequest{}))
	if err != nil {
		t.Fatalf("ListRepositories: %v", err)
	}
	checkNoSecret(t, "list response", protojson.Format(list.Msg))

	if !watch.Receive() {
		t.Fatalf("watch ended: %v", watch.Err())
	}
	checkNoSecret(t, "watch event", protojson.Format(watch.Msg()))
	if watch.Msg().GetRepository().GetMetadata().GetName() != "repo" {
		t.Errorf("watch event for %q, want repo", watch.Msg().GetRepository().GetMetadata().GetName())
	}

	events, err := ts.events().ListEvents(ctx, connect.NewRequest(&fleetplanev1.ListEventsRequest{}))
	if err != nil {
		t.Fatalf("ListEvents: %v", err)
	}
	if len(events.Msg.GetEvents()) == 0 {
		t.Error("no event was recorded for the create")
	}
	checkNoSecret(t, "events", protojson.Format(events.Msg))
}

func TestRepositorySecretsKept(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	client := ts.repositories()
	created, err := client.CreateRepository(ctx, connect.NewRequest(
		&fleetplanev1.CreateRepositoryRequest{Repository: secretRepository()}))
	if err != nil {
		t.Fatalf("CreateRepository: %v", err)
	}

	upd := created.Msg.GetRepository()
	upd.Spec.HttpConfig.Username = "v"
	upd.Spec.HttpConfig.Token = "new-token"
	if _, err := client.UpdateRepository(ctx, connect.NewRequest(
		&fleetplanev1.UpdateRepositoryRequest{Repository: upd})); err != nil {
		t.Fatalf("UpdateRepository: %v", err)
	}

	var stored *fleetplanev1.Repository
	err = ts.store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		obj, err := tx.Get(ctx, store.KindRepository, "repo")
		stored, _ = obj.(*fleetplanev1.Repository)
		return err
	})
	if err != nil {
		t.Fatalf("read stored repository: %v", err)
	}
	h, s := stored.GetSpec().GetHttpConfig(), stored.GetSpec().GetSshConfig()
	for _, c := range []struct{ field, got, want string }{
		{"username", h.GetUsername(), "v"},
		{"password", h.GetPassword(), secretPassword},
		{"token", h.GetToken(), "new-token"},
		{"tls.key", h.GetTlsKey(), secretTLSKey},
		{"sshPrivateKey", s.GetSshPrivateKey(), secretSSHKey},
		{"privateKeyPassphrase", s.GetPrivateKeyPassphrase(), secretPassphrase},
	} {
		if c.got != c.want {
			t.Errorf("stored %s = %q, want %q", c.field, c.got, c.want)
		}
	}
}

// Moving a repository to another host must not carry the stored credentials there, because a
// client that never saw them could then have the server send them to a host it chose.
func TestRepositorySecretsNewHost(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	client := ts.repositories()
	created, err := client.CreateRepository(ctx, connect.NewRequest(
		&fleetplanev1.CreateRepositoryRequest{Repository: secretRepository()}))
	if err != nil {
		t.Fatalf("CreateRepository: %v", err)
	}

	moved := created.Msg.GetRepository()
	moved.Spec.Url = "https://other.example.com/config.git"
	_, err = client.UpdateRepository(ctx, connect.NewRequest(
		&fleetplanev1.UpdateRepositoryRequest{Repository: moved}))
	wantCode(t, err, connect.CodeInvalidArgument)
	for _, field := range []string{"repository.spec.httpConfig.password",
		"repository.spec.sshConfig.sshPrivateKey"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	checkNoSecret(t, "error", err.Error())

	moved.Spec.HttpConfig = &fleetplanev1.HttpConfig{Username: "u", Password: "other-password"}
	moved.Spec.SshConfig = nil
	updated, err := client.UpdateRepository(ctx, connect.NewRequest(
		&fleetplanev1.UpdateRepositoryRequest{Repository: moved}))
	if err != nil {
		t.Fatalf("UpdateRepository with new credentials: %v", err)
	}
	if got := updated.Msg.GetRepository().GetSpec().GetUrl(); got != moved.Spec.Url {
		t.Errorf("url = %q, want %q", got, moved.Spec.Url)
	}
}

func TestRepositorySameHost(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"https://git.example.com/a.git", "https://git.example.com/b.git", true},
		{"https://git.example.com/a.git", "https://GIT.example.com/a.git", true},
		{"https://git.example.com/a.git", "https://git.example.com:8443/a.git", false},
		{"https://git.example.com/a.git", "http://git.example.com/a.git", false},
		{"https://git.example.com/a.git", "https://other.example.com/a.git", false},
		{"git@git.example.com:org/a.git", "ssh://git@git.example.com/org/b.git", true},
		{"git@git.example.com:org/a.git", "git@other.example.com:org/a.git", false},
	}
	for _, tt := range tests {
		if got := sameHost(tt.a, tt.b); got != tt.want {
			t.Errorf("sameHost(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestRepositoryURLPasswordHidden(t *testing.T) {
	ts := startServer(t, nil)
	repo := &fleetplanev1.Repository{
		Metadata: &fleetplanev1.ObjectMeta{Name: "repo"},
		Spec: &fleetplanev1.RepositorySpec{Type: "git",
			Url: "https://u:" + secretPassword + "@git.example.com/config.git"},
	}
	_, err := ts.repositories().CreateRepository(context.Background(), connect.NewRequest(
		&fleetplanev1.CreateRepositoryRequest{Repository: repo}))
	wantCode(t, err, connect.CodeInvalidArgument)
	if !strings.Contains(err.Error(), "repository.spec.url") {
		t.Errorf("error %q does not name repository.spec.url", err)
	}
	checkNoSecret(t, "error", err.Error())
}

// testSigner is a certificate authority made for one test.
type testSigner struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newTestSigner(t *testing.T) *testSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{key: key, cert: cert}
}

func (s *testSigner) SignCSR(csrPEM []byte, deviceName string) ([]byte, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: deviceName},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.cert, csr.PublicKey, s.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func createEnrollmentRequest(t *testing.T, ts *testServer, name string) {
	t.Helper()
	_, err := ts.enrollments().CreateEnrollmentRequest(context.Background(), connect.NewRequest(
		&fleetplanev1.CreateEnrollmentRequestRequest{EnrollmentRequest: &fleetplanev1.EnrollmentRequest{
			Metadata: &fleetplanev1.ObjectMeta{Name: name},
			Spec:     &fleetplanev1.EnrollmentRequestSpec{Csr: newCSR(t, name)},
			Status:   &fleetplanev1.EnrollmentRequestStatus{Certificate: "forged"},
		}}))
	if err != nil {
		t.Fatalf("CreateEnrollmentRequest: %v", err)
	}
}

func approve(ts *testServer, name string, approved bool, labels map[string]string) (*fleetplanev1.EnrollmentRequest, error) {
	resp, err := ts.enrollments().ApproveEnrollmentRequest(context.Background(), connect.NewRequest(
		&fleetplanev1.ApproveEnrollmentRequestRequest{Name: name, Approved: approved, Labels: labels}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetEnrollmentRequest(), nil
}

func TestApproveEnrollment(t *testing.T) {
	ts := startServer(t, func(cfg *Config) { cfg.Signer = newTestSigner(t) })
	createEnrollmentRequest(t, ts, "dev-1")

	er, err := approve(ts, "dev-1", true, map[string]string{"zone": "a"})
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	block, _ := pem.Decode([]byte(er.GetStatus().GetCertificate()))
	if block == nil {
		t.Fatalf("no certificate in status: %q", er.GetStatus().GetCertificate())
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	if cert.Subject.CommonName != "dev-1" {
		t.Errorf("certificate subject = %q, want dev-1", cert.Subject.CommonName)
	}
	if decision(er) != "approved" {
		t.Errorf("conditions = %v, want Approved", er.GetStatus().GetConditions())
	}
	if d := getDevice(t, ts, "dev-1"); d.GetMetadata().GetLabels()["zone"] != "a" {
		t.Errorf("device labels = %v, want zone=a", d.GetMetadata().GetLabels())
	}

	_, err = approve(ts, "dev-1", true, nil)
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = approve(ts, "dev-1", false, nil)
	wantCode(t, err, connect.CodeFailedPrecondition)
}

func TestApproveEnrollmentDeviceExists(t *testing.T) {
	ts := startServer(t, func(cfg *Config) { cfg.Signer = newTestSigner(t) })
	createDevice(t, ts, newDevice("dev-2", nil))
	createEnrollmentRequest(t, ts, "dev-2")

	_, err := approve(ts, "dev-2", true, nil)
	wantCode(t, err, connect.CodeAlreadyExists)
	resp, err := ts.enrollments().GetEnrollmentRequest(context.Background(),
		connect.NewRequest(&fleetplanev1.GetEnrollmentRequestRequest{Name: "dev-2"}))
	if err != nil {
		t.Fatal(err)
	}
	if c := resp.Msg.GetEnrollmentRequest().GetStatus().GetCertificate(); c != "" {
		t.Errorf("certificate stored although approval failed: %q", c)
	}
}

func TestDenyEnrollment(t *testing.T) {
	ts := startServer(t, nil)
	createEnrollmentRequest(t, ts, "dev-3")

	er, err := approve(ts, "dev-3", false, nil)
	if err != nil {
		t.Fatalf("deny: %v", err)
	}
	if decision(er) != "denied" {
		t.Errorf("conditions = %v, want Denied", er.GetStatus().GetConditions())
	}
	if er.GetStatus().GetCertificate() != "" {
		t.Error("denied request has a certificate")
	}
	_, err = ts.devices().GetDevice(context.Background(),
		connect.NewRequest(&fleetplanev1.GetDeviceRequest{Name: "dev-3"}))
	wantCode(t, err, connect.CodeNotFound)
}

func TestApproveWithoutSigner(t *testing.T) {
	ts := startServer(t, nil)
	createEnrollmentRequest(t, ts, "dev-4")
	_, err := approve(ts, "dev-4", true, nil)
	wantCode(t, err, connect.CodeFailedPrecondition)
	if msg := err.(*connect.Error).Message(); !strings.Contains(msg, "no certificate authority") {
		t.Errorf("message %q does not mention the certificate authority", msg)
	}
}

// createTemplateVersion writes a template version owned by fleet directly in the store, as the
// validation task does.
func createTemplateVersion(t *testing.T, ts *testServer, name, fleet string) {
	t.Helper()
	err := ts.store.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Create(ctx, &fleetplanev1.TemplateVersion{
			Metadata: &fleetplanev1.ObjectMeta{Name: name, Owner: "Fleet/" + fleet},
			Spec:     &fleetplanev1.TemplateVersionSpec{Fleet: fleet},
		})
		return err
	})
	if err != nil {
		t.Fatalf("create template version %s: %v", name, err)
	}
}

// templateVersionNames lists the stored template versions.
func templateVersionNames(t *testing.T, ts *testServer) []string {
	t.Helper()
	var names []string
	err := ts.store.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		page, err := tx.List(ctx, store.KindTemplateVersion, store.ListOptions{})
		for _, obj := range page.Items {
			names = append(names, store.Meta(obj).GetName())
		}
		return err
	})
	if err != nil {
		t.Fatalf("list template versions: %v", err)
	}
	return names
}

func TestDeleteFleetDeletesTemplateVersions(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	for _, name := range []string{"f1", "f2"} {
		f := fleetWithTemplate(&fleetplanev1.DeviceSpec{})
		f.Metadata.Name = name
		if _, err := ts.fleets().CreateFleet(ctx, connect.NewRequest(
			&fleetplanev1.CreateFleetRequest{Fleet: f})); err != nil {
			t.Fatalf("CreateFleet %s: %v", name, err)
		}
	}
	createTemplateVersion(t, ts, "f1-1", "f1")
	createTemplateVersion(t, ts, "f1-2", "f1")
	createTemplateVersion(t, ts, "f2-1", "f2")

	_, err := ts.fleets().DeleteFleet(ctx, connect.NewRequest(&fleetplanev1.DeleteFleetRequest{Name: "f1"}))
	if err != nil {
		t.Fatalf("DeleteFleet f1: %v", err)
	}
	if got := templateVersionNames(t, ts); len(got) != 1 || got[0] != "f2-1" {
		t.Errorf("template versions after deleting fleet f1 = %v; want only f2-1", got)
	}

	_, err = ts.fleets().DeleteFleets(ctx, connect.NewRequest(&fleetplanev1.DeleteFleetsRequest{}))
	if err != nil {
		t.Fatalf("DeleteFleets: %v", err)
	}
	if got := templateVersionNames(t, ts); len(got) != 0 {
		t.Errorf("template versions after deleting every fleet = %v; want none", got)
	}
}

func TestOwnedDeviceStaleUpdateConflicts(t *testing.T) {
	ts := startServer(t, nil)
	createDevice(t, ts, newDevice("owned", nil))
	setOwner(t, ts, "owned", "Fleet/edge")
	ctx := context.Background()
	exported := getDevice(t, ts, "owned")

	relabelled := getDevice(t, ts, "owned")
	relabelled.Metadata.Labels = map[string]string{"zone": "b"}
	_, err := ts.devices().UpdateDevice(ctx, connect.NewRequest(&fleetplanev1.UpdateDeviceRequest{Device: relabelled}))
	if err != nil {
		t.Fatalf("relabel: %v", err)
	}

	// The export carries the fleet's spec from before and a resource version that is now old.
	exported.Spec.Os.Image = "os:other"
	_, err = ts.devices().UpdateDevice(ctx, connect.NewRequest(&fleetplanev1.UpdateDeviceRequest{Device: exported}))
	wantCode(t, err, connect.CodeAborted)
}

func TestApproveMergesRequestedLabels(t *testing.T) {
	ts := startServer(t, func(cfg *Config) { cfg.Signer = newTestSigner(t) })
	_, err := ts.enrollments().CreateEnrollmentRequest(context.Background(), connect.NewRequest(
		&fleetplanev1.CreateEnrollmentRequestRequest{EnrollmentRequest: &fleetplanev1.EnrollmentRequest{
			Metadata: &fleetplanev1.ObjectMeta{Name: "dev-3"},
			Spec: &fleetplanev1.EnrollmentRequestSpec{Csr: newCSR(t, "dev-3"),
				Labels: map[string]string{"site": "lisbon", "fleet": "asked"}},
		}}))
	if err != nil {
		t.Fatalf("CreateEnrollmentRequest: %v", err)
	}
	er, err := approve(ts, "dev-3", true, map[string]string{"fleet": "demo"})
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	want := map[string]string{"site": "lisbon", "fleet": "demo"}
	if got := getDevice(t, ts, "dev-3").GetMetadata().GetLabels(); !maps.Equal(got, want) {
		t.Errorf("device labels = %v; want %v (requested, with the approval's on top)", got, want)
	}
	if got := er.GetStatus().GetApproval().GetLabels(); !maps.Equal(got, want) {
		t.Errorf("approval labels = %v; want %v", got, want)
	}
}
