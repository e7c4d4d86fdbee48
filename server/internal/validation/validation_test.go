package validation

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/structpb"
)

// fields returns the Field of every error in errs.
func fields(errs List) []string {
	var out []string
	for _, err := range errs {
		var fe *FieldError
		if errors.As(err, &fe) {
			out = append(out, fe.Field)
		}
	}
	return out
}

func TestDeviceSpecFieldPaths(t *testing.T) {
	spec := &fleetplanev1.DeviceSpec{
		Config: []*fleetplanev1.ConfigProviderSpec{
			{Name: "a", Inline: []*fleetplanev1.FileSpec{{Path: "/ok"}, {Path: "rel", Mode: 0o20000}}},
			{Name: "a", HttpRef: &fleetplanev1.HttpConfigProviderSpec{Repository: "r"}},
		},
		Applications: []*fleetplanev1.ApplicationProviderSpec{{Name: "x"}},
		Resources:    []*fleetplanev1.ResourceMonitor{{MonitorType: "GPU", SamplingInterval: "-1s"}},
	}
	want := []string{
		"s.config[0].inline[1].path",
		"s.config[0].inline[1].mode",
		"s.config[1].name",
		"s.config[1].httpRef.filePath",
		"s.applications[0].image",
		"s.resources[0].monitorType",
		"s.resources[0].samplingInterval",
	}
	if diff := cmp.Diff(want, fields(DeviceSpec("s", spec))); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
}

func TestDeviceSpecValid(t *testing.T) {
	spec := &fleetplanev1.DeviceSpec{
		Config: []*fleetplanev1.ConfigProviderSpec{
			{Name: "a", Inline: []*fleetplanev1.FileSpec{
				{Path: "/etc/a.conf", Content: "eA==", ContentEncoding: "base64", Mode: 0o4755}}},
			{Name: "b", GitRef: &fleetplanev1.GitConfigProviderSpec{Repository: "r", Path: "/cfg"}},
		},
	}
	if errs := DeviceSpec("s", spec); len(errs) != 0 {
		t.Errorf("valid spec gave errors: %v", errs)
	}
}

func TestBatchLimit(t *testing.T) {
	tests := []struct {
		limit *structpb.Value
		valid bool
	}{
		{nil, true},
		{structpb.NewNumberValue(1), true},
		{structpb.NewNumberValue(0), false},
		{structpb.NewNumberValue(2.5), false},
		{structpb.NewStringValue("1%"), true},
		{structpb.NewStringValue("100%"), true},
		{structpb.NewStringValue("0%"), false},
		{structpb.NewStringValue("101%"), false},
		{structpb.NewStringValue("5"), false},
		{structpb.NewStringValue(""), false},
		{structpb.NewNullValue(), false},
	}
	for _, tt := range tests {
		errs := batchLimit("limit", tt.limit)
		if got := len(errs) == 0; got != tt.valid {
			t.Errorf("batchLimit(%v) valid = %v, want %v (%v)", tt.limit, got, tt.valid, errs)
		}
	}
}

func TestRepositoryURL(t *testing.T) {
	tests := []struct {
		typ, url string
		valid    bool
	}{
		{"git", "https://example.com/a.git", true},
		{"git", "ssh://git@example.com/a.git", true},
		{"git", "git@example.com:org/a.git", true},
		{"http", "git@example.com:org/a.git", false},
		{"http", "https://example.com/files", true},
		{"http", "ftp://example.com/files", false},
		{"http", "", false},
		{"git", "https://user:pa ss@exa mple.com", false},
	}
	for _, tt := range tests {
		errs := repositoryURL("url", tt.typ, tt.url)
		if got := len(errs) == 0; got != tt.valid {
			t.Errorf("repositoryURL(%s, %q) valid = %v, want %v (%v)", tt.typ, tt.url, got, tt.valid, errs)
		}
	}
}

func TestRepositoryURLHidesPassword(t *testing.T) {
	errs := repositoryURL("url", "git", "https://user:s3cret@exa mple.com/")
	if len(errs) == 0 {
		t.Fatal("invalid URL was accepted")
	}
	if strings.Contains(errs.Error(), "s3cret") {
		t.Errorf("error %q contains the password", errs.Error())
	}
}

func TestRepositoryURLCredentials(t *testing.T) {
	tests := []struct {
		typ, url string
		valid    bool
	}{
		{"git", "https://alice:s3cret@example.com/a.git", false},
		{"git", "https://s3cret@example.com/a.git", false},
		{"http", "http://alice:s3cret@example.com/files", false},
		{"git", "ssh://git:s3cret@example.com/a.git", false},
		{"git", "ssh://git@example.com/a.git", true},
		{"git", "git@example.com:org/a.git", true},
	}
	for _, tt := range tests {
		errs := repositoryURL("spec.url", tt.typ, tt.url)
		if got := len(errs) == 0; got != tt.valid {
			t.Errorf("repositoryURL(%s, %q) valid = %v, want %v (%v)", tt.typ, tt.url, got, tt.valid, errs)
		}
		if strings.Contains(errs.Error(), "s3cret") {
			t.Errorf("repositoryURL(%s, %q) error %q contains the secret", tt.typ, tt.url, errs.Error())
		}
		if !tt.valid && !strings.Contains(errs.Error(), "httpConfig") &&
			!strings.Contains(errs.Error(), "sshConfig") {
			t.Errorf("repositoryURL(%s, %q) error %q does not say where credentials go",
				tt.typ, tt.url, errs.Error())
		}
	}
}

func TestListErrorCapsMessages(t *testing.T) {
	var errs List
	for range 8 {
		errs.add("f", "bad")
	}
	msg := errs.Error()
	if n := strings.Count(msg, "f: bad"); n != maxListed {
		t.Errorf("message lists %d errors, want %d: %q", n, maxListed, msg)
	}
	if !strings.Contains(msg, "and 3 more errors") {
		t.Errorf("message %q does not count the rest", msg)
	}
}

func TestLabelsTotalSize(t *testing.T) {
	labels := map[string]string{}
	for i := range 2000 {
		labels[fmt.Sprintf("key-%04d", i)] = strings.Repeat("v", 40)
	}
	errs := Labels("device.metadata.labels", labels)
	if len(errs) != 1 {
		t.Fatalf("Labels of 2,000 labels = %v; want one error", errs)
	}
	if msg := errs[0].Error(); !strings.HasPrefix(msg, "device.metadata.labels: ") ||
		!strings.Contains(msg, "limit of 65536 bytes") {
		t.Errorf("error = %v; want the labels field and the size limit", errs[0])
	}
	if errs := Labels("device.metadata.labels", map[string]string{"site": "berlin"}); len(errs) != 0 {
		t.Errorf("Labels of one small label = %v; want none", errs)
	}
}
