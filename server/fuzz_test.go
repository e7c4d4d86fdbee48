package server

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/fleetplane/fleetplane/gen/fleetplane/v1/fleetplanev1connect"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

// FuzzCreateJSON sends random bytes as the Connect JSON body of CreateFleet and CreateDevice,
// and of the matching updates, and checks that no response has status 500 (an internal error).
func FuzzCreateJSON(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"device":{"metadata":{"name":"a"},"spec":{"config":[{"name":"c","inline":[{"path":"/x","contentEncoding":"base64","content":"eA=="}]}]}}}`,
		`{"fleet":{"metadata":{"name":"f"},"spec":{"selector":{"matchExpressions":[{"key":"a","operator":"In","values":["b"]}]},"template":{"spec":{"os":{"image":"{{ .metadata.name }}"}}},"rolloutPolicy":{"deviceSelection":{"sequence":[{"limit":"20%"},{"limit":3}]}}}}}`,
		`{"fleet":{"spec":{"rolloutPolicy":{"deviceSelection":{"sequence":[{"limit":{"x":1}}]}}}}}`,
		`{"device":{"metadata":{"name":"a","labels":{"k":"v"}},"status":{"summary":{"status":"Online"}}}}`,
		`{"device":null}`,
		`{"device":{"metadata":{"name":"a","resourceVersion":"abc"}}}`,
		`[]`,
	} {
		f.Add([]byte(seed))
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "fuzz.db"), sqlite.Options{})
	if err != nil {
		f.Fatalf("open store: %v", err)
	}
	defer st.Close()
	srv, err := New(Config{Store: st})
	if err != nil {
		f.Fatalf("New: %v", err)
	}
	handler := srv.Handler()
	procedures := []string{
		fleetplanev1connect.FleetServiceCreateFleetProcedure,
		fleetplanev1connect.DeviceServiceCreateDeviceProcedure,
		fleetplanev1connect.FleetServiceUpdateFleetProcedure,
		fleetplanev1connect.DeviceServiceUpdateDeviceProcedure,
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, procedure := range procedures {
			req := httptest.NewRequest(http.MethodPost, procedure, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Errorf("%s returned status %d: %s", procedure, rec.Code, rec.Body.String())
			}
		}
	})
}

// FuzzUnaryJSON sends random JSON bodies to the other unary procedures. The first byte of the
// input picks the procedure.
func FuzzUnaryJSON(f *testing.F) {
	procedures := []string{
		fleetplanev1connect.RepositoryServiceCreateRepositoryProcedure,
		fleetplanev1connect.RepositoryServiceUpdateRepositoryProcedure,
		fleetplanev1connect.ResourceSyncServiceCreateResourceSyncProcedure,
		fleetplanev1connect.EnrollmentRequestServiceCreateEnrollmentRequestProcedure,
		fleetplanev1connect.EnrollmentRequestServiceApproveEnrollmentRequestProcedure,
		fleetplanev1connect.DeviceServiceUpdateDeviceStatusProcedure,
		fleetplanev1connect.DeviceServiceGetRenderedDeviceProcedure,
		fleetplanev1connect.DeviceServiceListDevicesProcedure,
		fleetplanev1connect.EventServiceListEventsProcedure,
		fleetplanev1connect.TaskServiceListTasksProcedure,
		fleetplanev1connect.TemplateVersionServiceDeleteTemplateVersionProcedure,
	}
	for i, seed := range []string{
		`{"repository":{"metadata":{"name":"r"},"spec":{"url":"https://x.example/r","type":"git"}}}`,
		`{"repository":{"metadata":{"name":"r"},"spec":{"url":"https://x.example/r","type":"http","httpConfig":{"password":"p"}}}}`,
		`{"resourceSync":{"metadata":{"name":"s"},"spec":{"repository":"r","path":"/f"}}}`,
		`{"enrollmentRequest":{"metadata":{"name":"e"},"spec":{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n"}}}`,
		`{"name":"e","approved":false,"labels":{"a":"b"}}`,
		`{"name":"d","status":{"summary":{"status":"Online"}},"resourceVersion":"x"}`,
		`{"name":"d"}`,
		`{"options":{"labelSelector":"a in (b","fieldSelector":"metadata.name=x","pageSize":5,"pageToken":"zz"}}`,
		`{"options":{"fieldSelector":"involvedObject.kind=Device"}}`,
		`{"state":"Pending","kind":"x","pageSize":-3,"pageToken":"!"}`,
		`{"name":"tv"}`,
	} {
		f.Add(append([]byte{byte(i)}, seed...))
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "fuzz.db"), sqlite.Options{})
	if err != nil {
		f.Fatalf("open store: %v", err)
	}
	defer st.Close()
	srv, err := New(Config{Store: st})
	if err != nil {
		f.Fatalf("New: %v", err)
	}
	handler := srv.Handler()
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) == 0 {
			return
		}
		procedure := procedures[int(input[0])%len(procedures)]
		req := httptest.NewRequest(http.MethodPost, procedure, bytes.NewReader(input[1:]))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Errorf("%s returned status %d: %s", procedure, rec.Code, rec.Body.String())
		}
	})
}
