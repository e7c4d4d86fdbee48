package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"google.golang.org/protobuf/types/known/structpb"
)

// newCSR returns a PEM certificate signing request with the given common name.
func newCSR(t *testing.T, commonName string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func inlineDevice(files ...*fleetplanev1.FileSpec) *fleetplanev1.Device {
	d := newDevice("d1", nil)
	d.Spec.Config = []*fleetplanev1.ConfigProviderSpec{{Name: "c", Inline: files}}
	return d
}

func fleetWithTemplate(spec *fleetplanev1.DeviceSpec) *fleetplanev1.Fleet {
	return &fleetplanev1.Fleet{
		Metadata: &fleetplanev1.ObjectMeta{Name: "f1"},
		Spec: &fleetplanev1.FleetSpec{
			Selector: &fleetplanev1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
			Template: &fleetplanev1.DeviceTemplate{Spec: spec},
		},
	}
}

func fleetWithBatchLimit(limit *structpb.Value) *fleetplanev1.Fleet {
	f := fleetWithTemplate(&fleetplanev1.DeviceSpec{})
	f.Spec.RolloutPolicy = &fleetplanev1.RolloutPolicy{
		DeviceSelection: &fleetplanev1.RolloutDeviceSelection{
			Strategy: "BatchSequence",
			Sequence: []*fleetplanev1.RolloutBatch{{Limit: limit}},
		},
	}
	return f
}

func TestCreateValidation(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	file := func(path string) *fleetplanev1.FileSpec {
		return &fleetplanev1.FileSpec{Path: path, Content: "x"}
	}
	createDevice := func(d *fleetplanev1.Device) error {
		_, err := ts.devices().CreateDevice(ctx, connect.NewRequest(&fleetplanev1.CreateDeviceRequest{Device: d}))
		return err
	}
	createFleet := func(f *fleetplanev1.Fleet) error {
		_, err := ts.fleets().CreateFleet(ctx, connect.NewRequest(&fleetplanev1.CreateFleetRequest{Fleet: f}))
		return err
	}
	createRepository := func(url, typ string) error {
		_, err := ts.repositories().CreateRepository(ctx, connect.NewRequest(
			&fleetplanev1.CreateRepositoryRequest{Repository: &fleetplanev1.Repository{
				Metadata: &fleetplanev1.ObjectMeta{Name: "r1"},
				Spec:     &fleetplanev1.RepositorySpec{Url: url, Type: typ}}}))
		return err
	}
	createEnrollment := func(name, csr string) error {
		_, err := ts.enrollments().CreateEnrollmentRequest(ctx, connect.NewRequest(
			&fleetplanev1.CreateEnrollmentRequestRequest{EnrollmentRequest: &fleetplanev1.EnrollmentRequest{
				Metadata: &fleetplanev1.ObjectMeta{Name: name},
				Spec:     &fleetplanev1.EnrollmentRequestSpec{Csr: csr}}}))
		return err
	}
	withMeta := func(m *fleetplanev1.ObjectMeta) *fleetplanev1.Device {
		d := newDevice("d1", nil)
		d.Metadata = m
		return d
	}
	withConfig := func(c ...*fleetplanev1.ConfigProviderSpec) *fleetplanev1.Device {
		d := newDevice("d1", nil)
		d.Spec.Config = c
		return d
	}
	git := &fleetplanev1.GitConfigProviderSpec{Repository: "repo", Path: "/x"}
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"missing device", func() error { return createDevice(nil) }, "device: must be set"},
		{"empty name", func() error { return createDevice(withMeta(&fleetplanev1.ObjectMeta{})) },
			"device.metadata.name: must be set"},
		{"bad name", func() error { return createDevice(withMeta(&fleetplanev1.ObjectMeta{Name: "A_b"})) },
			"device.metadata.name"},
		{"bad label key", func() error {
			return createDevice(withMeta(&fleetplanev1.ObjectMeta{Name: "a",
				Labels: map[string]string{"bad key": "v"}}))
		}, "device.metadata.labels[bad key]"},
		{"bad label value", func() error {
			return createDevice(withMeta(&fleetplanev1.ObjectMeta{Name: "a",
				Labels: map[string]string{"k": strings.Repeat("v", 64)}}))
		}, "device.metadata.labels[k]"},
		{"bad annotation key", func() error {
			return createDevice(withMeta(&fleetplanev1.ObjectMeta{Name: "a",
				Annotations: map[string]string{"a/b/c": "v"}}))
		}, "device.metadata.annotations[a/b/c]"},
		{"config name missing", func() error {
			return createDevice(withConfig(&fleetplanev1.ConfigProviderSpec{GitRef: git}))
		}, "device.spec.config[0].name: must be set"},
		{"config name duplicate", func() error {
			return createDevice(withConfig(&fleetplanev1.ConfigProviderSpec{Name: "c", GitRef: git},
				&fleetplanev1.ConfigProviderSpec{Name: "c", GitRef: git}))
		}, "device.spec.config[1].name"},
		{"config source missing", func() error {
			return createDevice(withConfig(&fleetplanev1.ConfigProviderSpec{Name: "c"}))
		}, "device.spec.config[0]: exactly one of inline, gitRef and httpRef"},
		{"config sources two", func() error {
			return createDevice(withConfig(&fleetplanev1.ConfigProviderSpec{Name: "c", GitRef: git,
				Inline: []*fleetplanev1.FileSpec{file("/a")}}))
		}, "device.spec.config[0]: exactly one of inline, gitRef and httpRef"},
		{"relative path", func() error { return createDevice(inlineDevice(file("/a"), file("etc/x"))) },
			"device.spec.config[0].inline[1].path: must be an absolute path"},
		{"dot-dot path", func() error { return createDevice(inlineDevice(file("/etc/../x"))) },
			"device.spec.config[0].inline[0].path: must not contain"},
		{"unclean path", func() error { return createDevice(inlineDevice(file("/etc//x"))) },
			"device.spec.config[0].inline[0].path: must be a clean path"},
		{"bad encoding", func() error {
			return createDevice(inlineDevice(&fleetplanev1.FileSpec{Path: "/a", ContentEncoding: "gzip"}))
		}, "device.spec.config[0].inline[0].contentEncoding"},
		{"bad base64", func() error {
			return createDevice(inlineDevice(&fleetplanev1.FileSpec{Path: "/a", Content: "!!",
				ContentEncoding: "base64"}))
		}, "device.spec.config[0].inline[0].content: is not valid base64"},
		{"mode too large", func() error {
			return createDevice(inlineDevice(&fleetplanev1.FileSpec{Path: "/a", Mode: 0o10000}))
		}, "device.spec.config[0].inline[0].mode"},
		{"mode negative", func() error {
			return createDevice(inlineDevice(&fleetplanev1.FileSpec{Path: "/a", Mode: -1}))
		}, "device.spec.config[0].inline[0].mode"},
		{"fleet selector operator", func() error {
			f := fleetWithTemplate(&fleetplanev1.DeviceSpec{})
			f.Spec.Selector.MatchExpressions = []*fleetplanev1.LabelSelectorRequirement{
				{Key: "a", Operator: "Near"}}
			return createFleet(f)
		}, "fleet.spec.selector: matchExpressions[0].operator"},
		{"fleet selector values", func() error {
			f := fleetWithTemplate(&fleetplanev1.DeviceSpec{})
			f.Spec.Selector.MatchExpressions = []*fleetplanev1.LabelSelectorRequirement{
				{Key: "a", Operator: "In"}}
			return createFleet(f)
		}, "fleet.spec.selector: matchExpressions[0]"},
		{"fleet template path", func() error {
			return createFleet(fleetWithTemplate(&fleetplanev1.DeviceSpec{
				Config: []*fleetplanev1.ConfigProviderSpec{{Name: "c",
					Inline: []*fleetplanev1.FileSpec{file("/a"), file("b")}}}}))
		}, "fleet.spec.template.spec.config[0].inline[1].path: must be an absolute path"},
		{"fleet template parameter", func() error {
			return createFleet(fleetWithTemplate(&fleetplanev1.DeviceSpec{
				Os: &fleetplanev1.DeviceOsSpec{Image: "{{ .spec.os }}"}}))
		}, "fleet.spec.template: "},
		{"batch limit zero", func() error { return createFleet(fleetWithBatchLimit(structpb.NewNumberValue(0))) },
			"fleet.spec.rolloutPolicy.deviceSelection.sequence[0].limit"},
		{"batch limit fraction", func() error {
			return createFleet(fleetWithBatchLimit(structpb.NewNumberValue(1.5)))
		}, "fleet.spec.rolloutPolicy.deviceSelection.sequence[0].limit"},
		{"batch limit zero percent", func() error {
			return createFleet(fleetWithBatchLimit(structpb.NewStringValue("0%")))
		}, "fleet.spec.rolloutPolicy.deviceSelection.sequence[0].limit"},
		{"batch limit over percent", func() error {
			return createFleet(fleetWithBatchLimit(structpb.NewStringValue("101%")))
		}, "fleet.spec.rolloutPolicy.deviceSelection.sequence[0].limit"},
		{"batch limit text", func() error {
			return createFleet(fleetWithBatchLimit(structpb.NewStringValue("many")))
		}, "fleet.spec.rolloutPolicy.deviceSelection.sequence[0].limit"},
		{"batch limit bool", func() error {
			return createFleet(fleetWithBatchLimit(structpb.NewBoolValue(true)))
		}, "fleet.spec.rolloutPolicy.deviceSelection.sequence[0].limit"},
		{"success threshold", func() error {
			f := fleetWithBatchLimit(structpb.NewNumberValue(2))
			f.Spec.RolloutPolicy.SuccessThreshold = "150%"
			return createFleet(f)
		}, "fleet.spec.rolloutPolicy.successThreshold"},
		{"update timeout", func() error {
			f := fleetWithBatchLimit(structpb.NewStringValue("50%"))
			f.Spec.RolloutPolicy.DefaultUpdateTimeout = "soon"
			return createFleet(f)
		}, "fleet.spec.rolloutPolicy.defaultUpdateTimeout"},
		{"repository url", func() error { return createRepository("://nope", "git") },
			"repository.spec.url"},
		{"repository url without host", func() error { return createRepository("/just/a/path", "http") },
			"repository.spec.url"},
		{"repository type", func() error { return createRepository("https://example.com/r", "svn") },
			"repository.spec.type"},
		{"resource sync path", func() error {
			_, err := fleetplanev1connect.NewResourceSyncServiceClient(http.DefaultClient, ts.url).
				CreateResourceSync(ctx, connect.NewRequest(&fleetplanev1.CreateResourceSyncRequest{
					ResourceSync: &fleetplanev1.ResourceSync{
						Metadata: &fleetplanev1.ObjectMeta{Name: "rs"},
						Spec:     &fleetplanev1.ResourceSyncSpec{Repository: "r", Path: "fleets"}}}))
			return err
		}, "resourceSync.spec.path"},
		{"csr not pem", func() error { return createEnrollment("dev1", "hello") },
			"enrollmentRequest.spec.csr: must be a PEM block"},
		{"csr common name", func() error { return createEnrollment("dev1", newCSR(t, "dev2")) },
			`enrollmentRequest.spec.csr: common name "dev2" must equal the request name "dev1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			wantCode(t, err, connect.CodeInvalidArgument)
			if msg := err.(*connect.Error).Message(); !strings.Contains(msg, tt.field) {
				t.Errorf("message %q does not contain %q", msg, tt.field)
			}
		})
	}
}

func TestCreateValidFleet(t *testing.T) {
	ts := startServer(t, nil)
	f := fleetWithBatchLimit(structpb.NewStringValue("20%"))
	f.Spec.Template.Spec.Os = &fleetplanev1.DeviceOsSpec{Image: "os:{{ .metadata.labels.track }}"}
	f.Spec.RolloutPolicy.DeviceSelection.Sequence = append(f.Spec.RolloutPolicy.DeviceSelection.Sequence,
		&fleetplanev1.RolloutBatch{Limit: structpb.NewNumberValue(5), SuccessThreshold: "90%"})
	_, err := ts.fleets().CreateFleet(context.Background(),
		connect.NewRequest(&fleetplanev1.CreateFleetRequest{Fleet: f}))
	if err != nil {
		t.Fatalf("CreateFleet: %v", err)
	}
}

// postJSON sends body to a procedure over the Connect protocol and returns the status code and
// the error code of the response.
func postJSON(t *testing.T, url, procedure, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url+procedure, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Code string }
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, e.Code
}

func TestUnknownJSONField(t *testing.T) {
	ts := startServer(t, nil)
	status, code := postJSON(t, ts.url, fleetplanev1connect.DeviceServiceCreateDeviceProcedure,
		`{"device":{"metadata":{"name":"a"},"spek":{}}}`)
	if status != http.StatusBadRequest || code != "invalid_argument" {
		t.Errorf("got %d %q, want 400 invalid_argument", status, code)
	}
}

func TestTypeFieldsMismatch(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	tests := []struct {
		name, apiVersion, kind, field string
	}{
		{"other kind", "fleetplane.dev/v1", "Fleet", "device.kind"},
		{"other apiVersion", "v9", "Device", "device.apiVersion"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDevice("typed", nil)
			d.ApiVersion, d.Kind = tt.apiVersion, tt.kind
			_, err := ts.devices().CreateDevice(ctx,
				connect.NewRequest(&fleetplanev1.CreateDeviceRequest{Device: d}))
			wantCode(t, err, connect.CodeInvalidArgument)
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("create error %q does not name %s", err, tt.field)
			}
			_, err = ts.devices().UpdateDevice(ctx,
				connect.NewRequest(&fleetplanev1.UpdateDeviceRequest{Device: d}))
			wantCode(t, err, connect.CodeInvalidArgument)
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("update error %q does not name %s", err, tt.field)
			}
		})
	}

	d := newDevice("untyped", nil)
	if _, err := ts.devices().CreateDevice(ctx,
		connect.NewRequest(&fleetplanev1.CreateDeviceRequest{Device: d})); err != nil {
		t.Errorf("create without apiVersion and kind: %v", err)
	}
}

func TestRequestTooLarge(t *testing.T) {
	ts := startServer(t, nil)
	d := newDevice("big", nil)
	d.Spec.Os.Image = strings.Repeat("x", MaxRequestBytes+1)
	_, err := ts.devices(connect.WithGRPC()).CreateDevice(context.Background(),
		connect.NewRequest(&fleetplanev1.CreateDeviceRequest{Device: d}))
	wantCode(t, err, connect.CodeResourceExhausted)
}

func TestListBadOptions(t *testing.T) {
	ts := startServer(t, nil)
	createDevice(t, ts, newDevice("a", nil))
	tests := []struct {
		name  string
		opts  *fleetplanev1.ListOptions
		field string
	}{
		{"page token", &fleetplanev1.ListOptions{PageToken: "!!garbage!!"}, "options.pageToken"},
		{"page token base64", &fleetplanev1.ListOptions{PageToken: "ZnJvYg"}, "options.pageToken"},
		{"label selector", &fleetplanev1.ListOptions{LabelSelector: "a in ("}, "options.labelSelector"},
		{"field selector", &fleetplanev1.ListOptions{FieldSelector: "spec.nothing=1"},
			"options.fieldSelector"},
		{"field selector syntax", &fleetplanev1.ListOptions{FieldSelector: "a~b"},
			"options.fieldSelector"},
		{"page size", &fleetplanev1.ListOptions{PageSize: -1}, "options.pageSize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ts.devices().ListDevices(context.Background(),
				connect.NewRequest(&fleetplanev1.ListDevicesRequest{Options: tt.opts}))
			wantCode(t, err, connect.CodeInvalidArgument)
			if msg := err.(*connect.Error).Message(); !strings.Contains(msg, tt.field) {
				t.Errorf("message %q does not contain %q", msg, tt.field)
			}
		})
	}
}

func TestListPages(t *testing.T) {
	ts := startServer(t, nil)
	for _, name := range []string{"a", "b", "c"} {
		createDevice(t, ts, newDevice(name, nil))
	}
	var names []string
	token := ""
	for range 5 {
		resp, err := ts.devices().ListDevices(context.Background(), connect.NewRequest(
			&fleetplanev1.ListDevicesRequest{Options: &fleetplanev1.ListOptions{PageSize: 2, PageToken: token}}))
		if err != nil {
			t.Fatalf("ListDevices: %v", err)
		}
		for _, d := range resp.Msg.GetDevices() {
			names = append(names, d.GetMetadata().GetName())
		}
		token = resp.Msg.GetNextPageToken()
		if token == "" {
			break
		}
	}
	if got := strings.Join(names, ","); got != "a,b,c" {
		t.Errorf("listed %s, want a,b,c", got)
	}
}
