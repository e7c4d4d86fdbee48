package tasks

import (
	"errors"
	"strings"
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

// inlineSpec returns a device spec with one inline file whose content is content.
func inlineSpec(content string) *fleetplanev1.DeviceSpec {
	return &fleetplanev1.DeviceSpec{
		Config: []*fleetplanev1.ConfigProviderSpec{{
			Name:   "main",
			Inline: []*fleetplanev1.FileSpec{{Path: "/etc/app.conf", Content: content}},
		}},
	}
}

func renderContent(t *testing.T, content, name string, labels map[string]string) (string, error) {
	t.Helper()
	out, err := Render(inlineSpec(content), name, labels)
	if err != nil {
		return "", err
	}
	return out.GetConfig()[0].GetInline()[0].GetContent(), nil
}

func TestRenderCases(t *testing.T) {
	labels := map[string]string{"env": "prod", "zone": "Eu-West", "n": "3"}
	cases := []struct {
		name     string
		template string
		want     string
	}{
		{"plain text", "no actions here", "no actions here"},
		{"name", "host={{ .metadata.name }}", "host=d1"},
		{"label", "{{ .metadata.labels.zone }}", "Eu-West"},
		{"upper", "{{ upper .metadata.labels.zone }}", "EU-WEST"},
		{"lower pipe", "{{ .metadata.labels.zone | lower }}", "eu-west"},
		{"replace", `{{ replace "-" "_" .metadata.labels.zone }}`, "Eu_West"},
		{"replace pipe", `{{ .metadata.name | replace "d" "device-" }}`, "device-1"},
		{"getOrDefault present", `{{ getOrDefault .metadata.labels "env" "dev" }}`, "prod"},
		{"getOrDefault missing", `{{ getOrDefault .metadata.labels "rack" "r0" }}`, "r0"},
		{"if eq", `{{ if eq .metadata.labels.env "prod" }}A{{ else }}B{{ end }}`, "A"},
		{"if ne", `{{ if ne .metadata.labels.env "prod" }}A{{ else }}B{{ end }}`, "B"},
		{"eq several", `{{ eq .metadata.labels.env "dev" "prod" }}`, "true"},
		{"eq number", `{{ if eq .metadata.labels.n 3 }}three{{ end }}`, "three"},
		{"eq bool string", `{{ eq true "true" }}`, "false"},
		{"and", `{{ and .metadata.labels.env .metadata.labels.zone }}`, "Eu-West"},
		{"or missing first", `{{ or .metadata.labels.rack "none" }}`, "none"},
		{"not", `{{ not .metadata.labels.rack }}`, "true"},
		{"else if", `{{ if .metadata.labels.rack }}r{{ else if .metadata.labels.zone }}z{{ end }}`, "z"},
		{"parentheses", `{{ upper (getOrDefault .metadata.labels "rack" "x") }}`, "X"},
		{"comment trim", "a {{- /* note */ -}} b", "ab"},
		{"bool literal", "{{ true }}", "true"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := renderContent(t, tc.template, "d1", labels)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if got != tc.want {
				t.Errorf("Render = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRenderMissingLabel(t *testing.T) {
	_, err := renderContent(t, "zone={{ .metadata.labels.zone }}", "d1", map[string]string{"env": "prod"})

	var missing *MissingLabelError
	if !errors.As(err, &missing) {
		t.Fatalf("Render error = %v, want a MissingLabelError", err)
	}
	want := "device d1 has no label zone, which spec.config[0].inline[0].content uses"
	if err.Error() != want {
		t.Errorf("Render error = %q, want %q", err, want)
	}
}

func TestRenderMissingLabelThroughFunction(t *testing.T) {
	_, err := renderContent(t, "{{ upper .metadata.labels.zone }}", "d1", nil)

	var missing *MissingLabelError
	if !errors.As(err, &missing) || missing.Label != "zone" {
		t.Fatalf("Render error = %v, want a MissingLabelError for zone", err)
	}
}

func TestRenderMissingLabelInCondition(t *testing.T) {
	got, err := renderContent(t, `{{ if eq .metadata.labels.env "prod" }}A{{ else }}B{{ end }}`, "d1", nil)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if got != "B" {
		t.Errorf("Render = %q, want B", got)
	}
}

func TestRenderEveryStringField(t *testing.T) {
	spec := &fleetplanev1.DeviceSpec{
		Os: &fleetplanev1.DeviceOsSpec{Image: "os:{{ .metadata.labels.track }}"},
		Applications: []*fleetplanev1.ApplicationProviderSpec{{
			Name:    "app",
			Image:   "app:{{ .metadata.labels.track }}",
			EnvVars: map[string]string{"SITE": "{{ .metadata.name }}", "FIXED": "1"},
		}},
		Systemd: &fleetplanev1.DeviceSystemdSpec{MatchPatterns: []string{"{{ .metadata.name }}-*.service"}},
	}
	got, err := Render(spec, "d7", map[string]string{"track": "stable"})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}

	want := &fleetplanev1.DeviceSpec{
		Os: &fleetplanev1.DeviceOsSpec{Image: "os:stable"},
		Applications: []*fleetplanev1.ApplicationProviderSpec{{
			Name:    "app",
			Image:   "app:stable",
			EnvVars: map[string]string{"SITE": "d7", "FIXED": "1"},
		}},
		Systemd: &fleetplanev1.DeviceSystemdSpec{MatchPatterns: []string{"d7-*.service"}},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Render (-want +got):\n%s", diff)
	}
	if spec.GetOs().GetImage() != "os:{{ .metadata.labels.track }}" {
		t.Errorf("Render changed its input: os.image = %q", spec.GetOs().GetImage())
	}
}

func TestValidateTemplateRejects(t *testing.T) {
	cases := []struct {
		name     string
		template string
		want     string
	}{
		{"spec field", "{{ .spec.os.image }}", "field .spec.os.image is not available"},
		{"status field", "{{ .status }}", "field .status is not available"},
		{"owner field", "{{ .metadata.owner }}", "field .metadata.owner is not available"},
		{"nested label", "{{ .metadata.labels.a.b }}", "field .metadata.labels.a.b is not available"},
		{"labels map printed", "{{ .metadata.labels }}", ".metadata.labels is a map"},
		{"labels map argument", "{{ upper .metadata.labels }}", "argument 1 of upper is the .metadata.labels map"},
		{"getOrDefault first", `{{ getOrDefault "a" "b" "c" }}`, "first argument of getOrDefault"},
		{"unknown function", `{{ printf "%s" .metadata.name }}`, `function "printf" is not allowed`},
		{"index", `{{ index .metadata.labels "a" }}`, `function "index" is not allowed`},
		{"too few", "{{ upper }}", "upper needs at least 1 arguments, got 0"},
		{"too many", `{{ lower "a" "b" }}`, "lower takes at most 1 arguments, got 2"},
		{"piped too many", `{{ "a" | lower "b" }}`, "lower takes at most 1 arguments, got 2"},
		{"range", "{{ range .metadata.labels }}x{{ end }}", "range is not allowed"},
		{"with", "{{ with .metadata.name }}x{{ end }}", "with is not allowed"},
		{"define", `{{ define "x" }}y{{ end }}`, "define and block are not allowed"},
		{"template", `{{ template "x" }}`, "template and block are not allowed"},
		{"block", `{{ block "x" . }}y{{ end }}`, "not allowed"},
		{"variable", "{{ $x := .metadata.name }}{{ $x }}", "variables are not allowed"},
		{"root variable", "{{ $.metadata.name }}", "variables are not allowed"},
		{"dot", "{{ . }}", "{{ . }} is not allowed"},
		{"nil", "{{ nil }}", "not allowed"},
		{"chain", `{{ (getOrDefault .metadata.labels "a" "b").x }}`, "field access on an expression"},
		{"argument to field", `{{ .metadata.name "x" }}`, "is not a function"},
		{"pipe to field", `{{ "x" | .metadata.name }}`, "is not a function"},
		{"parse error", "{{ .metadata.name ", "spec.config[0].inline[0].content:1:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateTemplate(&fleetplanev1.DeviceTemplate{Spec: inlineSpec(tc.template)})
			if len(errs) == 0 {
				t.Fatalf("ValidateTemplate accepted %q", tc.template)
			}
			got := errors.Join(errs...).Error()
			if !strings.Contains(got, tc.want) {
				t.Errorf("ValidateTemplate error = %q, want it to contain %q", got, tc.want)
			}
			if !strings.HasPrefix(got, "spec.config[0].inline[0].content") {
				t.Errorf("ValidateTemplate error = %q, want it to start with the field path", got)
			}
		})
	}
}

func TestValidateTemplateEveryProblem(t *testing.T) {
	spec := &fleetplanev1.DeviceSpec{
		Os: &fleetplanev1.DeviceOsSpec{Image: "{{ .spec }}"},
		Applications: []*fleetplanev1.ApplicationProviderSpec{{
			EnvVars: map[string]string{"A": "{{ printf }}", "B": "{{ .metadata.name }}"},
		}},
	}
	errs := ValidateTemplate(&fleetplanev1.DeviceTemplate{Spec: spec})

	var paths []string
	for _, err := range errs {
		paths = append(paths, strings.SplitN(err.Error(), ":", 2)[0])
	}
	want := []string{"spec.os.image", "spec.applications[0].envVars[A]"}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("error paths (-want +got):\n%s\nerrors: %v", diff, errs)
	}
}

func TestValidateTemplateAccepts(t *testing.T) {
	for _, template := range []string{
		"",
		"plain }} text",
		"{{ .metadata.labels.zone }}",
		`{{ if and (eq .metadata.labels.env "prod") (not .metadata.labels.canary) }}p{{ end }}`,
		`{{ getOrDefault .metadata.labels (lower .metadata.name) "x" }}`,
	} {
		if errs := ValidateTemplate(&fleetplanev1.DeviceTemplate{Spec: inlineSpec(template)}); len(errs) > 0 {
			t.Errorf("ValidateTemplate(%q) = %v, want no errors", template, errs)
		}
	}
}

func TestValidateTemplateNil(t *testing.T) {
	if errs := ValidateTemplate(nil); len(errs) > 0 {
		t.Errorf("ValidateTemplate(nil) = %v, want no errors", errs)
	}
}

// FuzzTemplate checks that validation and rendering never panic and agree: a template that
// fails validation renders for no device, and one that passes fails only on missing labels.
func FuzzTemplate(f *testing.F) {
	for _, seed := range []string{
		"{{ .metadata.name }}",
		`{{ if eq .metadata.labels.env "prod" }}A{{ else }}B{{ end }}`,
		`{{ getOrDefault .metadata.labels "zone" "z" | upper | replace "Z" "y" }}`,
		"{{ or .metadata.labels.a .metadata.labels.b }}",
		"{{ range . }}{{ end }}",
		`{{ define "a" }}{{ end }}`,
		"{{ $x := 1 }}",
		"{{ (1).x }}",
		"{{ and }}",
		"{{ upper upper }}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, template string) {
		spec := inlineSpec(template)
		errs := ValidateTemplate(&fleetplanev1.DeviceTemplate{Spec: spec})
		for _, labels := range []map[string]string{nil, {"env": "prod", "zone": "a", "a": "1", "b": "2"}} {
			_, err := Render(spec, "d1", labels)
			if len(errs) > 0 {
				if err == nil {
					t.Fatalf("ValidateTemplate rejected %q (%v) but Render succeeded", template, errs)
				}
				continue
			}
			var missing *MissingLabelError
			if err != nil && !errors.As(err, &missing) {
				t.Fatalf("Render(%q) = %v, want success or a MissingLabelError", template, err)
			}
		}
	})
}
