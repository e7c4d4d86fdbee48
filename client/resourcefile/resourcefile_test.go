package resourcefile

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

const fleetYAML = `apiVersion: fleetplane.dev/v1
kind: Fleet
metadata:
  name: edge
  labels:
    env: prod
spec:
  selector:
    matchLabels:
      fleet: demo
  template:
    metadata:
      labels:
        fleet: demo
    spec:
      os:
        image: quay.io/example/os:1.2
      config:
        - name: motd
          inline:
            - path: /etc/motd
              content: "hello {{ .metadata.name }}"
              mode: 0644
        - name: from-git
          gitRef:
            repository: configs
            targetRevision: main
            path: /edge
        - name: from-http
          httpRef:
            repository: web
            filePath: /etc/app.conf
            suffix: /app.conf
  rolloutPolicy:
    deviceSelection:
      strategy: BatchSequence
      sequence:
        - selector:
            matchLabels:
              site: a
          limit: 1
        - limit: "50%"
    disruptionBudget:
      groupBy: [site]
      maxUnavailable: 1
status:
  conditions:
    - type: Valid
      status: "True"
`

func TestParseFleetShapes(t *testing.T) {
	docs, err := Parse("fleet.yaml", []byte(fleetYAML))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(docs) != 1 {
		t.Fatalf("got %d documents, want 1", len(docs))
	}
	f, ok := docs[0].Object.(*fleetplanev1.Fleet)
	if !ok {
		t.Fatalf("object is %T, want *Fleet", docs[0].Object)
	}
	if got := docs[0].String(); got != "fleet/edge" {
		t.Errorf("String() = %q, want fleet/edge", got)
	}
	cfg := f.GetSpec().GetTemplate().GetSpec().GetConfig()
	if got := cfg[0].GetInline()[0].GetMode(); got != 420 {
		t.Errorf("mode = %d, want 420 (0644)", got)
	}
	if got := cfg[1].GetGitRef().GetTargetRevision(); got != "main" {
		t.Errorf("gitRef.targetRevision = %q, want main", got)
	}
	if got := cfg[2].GetHttpRef().GetFilePath(); got != "/etc/app.conf" {
		t.Errorf("httpRef.filePath = %q", got)
	}
	if got := f.GetSpec().GetSelector().GetMatchLabels()["fleet"]; got != "demo" {
		t.Errorf("selector.matchLabels.fleet = %q, want demo", got)
	}
	seq := f.GetSpec().GetRolloutPolicy().GetDeviceSelection().GetSequence()
	if got := seq[1].GetLimit().GetStringValue(); got != "50%" {
		t.Errorf("sequence[1].limit = %q, want 50%%", got)
	}
	if f.GetStatus() != nil {
		t.Errorf("status = %v, want it ignored", f.GetStatus())
	}
}

func TestParseSeveralDocuments(t *testing.T) {
	data := "# devices\n---\n" +
		"apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata: {name: a}\n" +
		"---\n---  # empty\n" +
		`{"apiVersion": "fleetplane.dev/v1", "kind": "Repository", ` +
		`"metadata": {"name": "r"}, "spec": {"type": "git", "url": "https://example.com/r.git"}}` +
		"\n"
	docs, err := Parse("mixed.yaml", []byte(data))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var got []string
	for _, d := range docs {
		got = append(got, d.String())
	}
	if diff := cmp.Diff([]string{"device/a", "repository/r"}, got); diff != "" {
		t.Errorf("documents (-want +got):\n%s", diff)
	}
	// The comment before the first "---" and the empty document between the two "---" lines
	// get no number.
	if docs[1].Index != 2 {
		t.Errorf("repository index = %d, want 2", docs[1].Index)
	}
}

func TestParseErrors(t *testing.T) {
	const head = "apiVersion: fleetplane.dev/v1\nkind: Fleet\nmetadata:\n  name: edge\n"
	tests := []struct {
		name  string
		data  string
		field string
		want  []string // substrings of the message
	}{
		{"malformed", "---\n" + head + "spec:\n  selector: [a\n", "",
			[]string{"document 1", "line 7", "invalid YAML"}},
		{"missing kind", "apiVersion: fleetplane.dev/v1\nmetadata: {name: x}\n", "kind",
			[]string{"missing", "Device, EnrollmentRequest, Fleet, Repository, ResourceSync"}},
		{"unknown kind", "apiVersion: fleetplane.dev/v1\nkind: Flet\nmetadata: {name: x}\n",
			"kind", []string{`unknown kind "Flet"`, "Fleet"}},
		{"server kind", "apiVersion: fleetplane.dev/v1\nkind: Event\nmetadata: {name: x}\n",
			"kind", []string{"cannot be applied"}},
		{"api version", "apiVersion: flightctl.io/v1beta1\nkind: Fleet\nmetadata: {name: x}\n",
			"apiVersion", []string{"change apiVersion to fleetplane.dev/v1"}},
		{"unknown field", head + "spec:\n  template:\n    spec:\n      confg: []\n",
			"spec.template.spec.confg", []string{"(Fleet/edge)", `did you mean "config"`}},
		{"unknown top field", head + "specs: {}\n", "specs", []string{"unknown field"}},
		{"wrong type", head + "spec:\n  template:\n    spec:\n      config:\n" +
			"        - name: a\n          inline:\n            - path: /a\n              mode: rw\n",
			"spec.template.spec.config[0].inline[0].mode",
			[]string{"expected an integer, got a string"}},
		{"label number", "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata:\n  name: d\n" +
			"  labels:\n    version: 2\n", "metadata.labels.version",
			[]string{"expected a string, got a number; quote the value"}},
		{"label value", "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata:\n  name: d\n" +
			"  labels:\n    site: two words\n", "metadata.labels.site",
			[]string{"(Device/d)", `invalid label value "two words"`}},
		{"selector key", head + "spec:\n  selector:\n    matchLabels:\n      -bad: x\n",
			`spec.selector.matchLabels["-bad"]`, []string{"invalid label key"}},
		{"missing name", "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata: {}\n",
			"metadata.name", []string{"missing"}},
		{"bad name", "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata: {name: Big}\n",
			"metadata.name", []string{`invalid name "Big"`}},
		{"not a mapping", "- a\n- b\n", "", []string{"expected a mapping"}},
		{"list for object", head + "spec: [1]\n", "spec", []string{"expected a mapping"}},
		{"out of range", head + "spec:\n  rolloutPolicy:\n    disruptionBudget:\n" +
			"      maxUnavailable: 99999999999\n", "spec.rolloutPolicy.disruptionBudget.maxUnavailable",
			[]string{"out of range"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := Parse("bad.yaml", []byte(tt.data))
			if err == nil {
				t.Fatalf("Parse returned no error and %d documents", len(docs))
			}
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if perr.Field != tt.field {
				t.Errorf("Field = %q, want %q (error: %v)", perr.Field, tt.field, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "bad.yaml: document ") {
				t.Errorf("message %q does not name the file and document", msg)
			}
			for _, want := range tt.want {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestParseMalformedLine(t *testing.T) {
	data := "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata: {name: a}\n---\n" +
		"kind: Device\nmetadata:\n  name: b\n   labels: x\n"
	_, err := Parse("f.yaml", []byte(data))
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("Parse error = %v, want *Error", err)
	}
	if perr.Document != 2 {
		t.Errorf("Document = %d, want 2", perr.Document)
	}
	if perr.Line != 8 {
		t.Errorf("Line = %d, want 8 (error: %v)", perr.Line, err)
	}
}

func TestParseReportsEveryDocument(t *testing.T) {
	data := "kind: Nope\n---\napiVersion: fleetplane.dev/v1\nkind: Device\nmetadata: {name: ok}\n" +
		"---\napiVersion: v9\nkind: Device\n"
	docs, err := Parse("f.yaml", []byte(data))
	if len(docs) != 1 {
		t.Errorf("got %d documents, want the 1 valid one", len(docs))
	}
	msg := err.Error()
	for _, want := range []string{"document 1", "document 3"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %s", msg, want)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	docs, err := Parse("fleet.yaml", []byte(fleetYAML))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	in := docs[0].Object.(*fleetplanev1.Fleet)
	in.Metadata.ResourceVersion = "12"
	in.Metadata.Generation = 3
	in.Status = &fleetplanev1.FleetStatus{Conditions: []*fleetplanev1.Condition{
		{Type: "Valid", Status: "True"}}}
	for _, format := range []string{FormatYAML, FormatJSON} {
		out, err := Marshal(in, format)
		if err != nil {
			t.Fatalf("Marshal %s: %v", format, err)
		}
		if !strings.Contains(string(out), "resourceVersion") || !strings.Contains(string(out), "Valid") {
			t.Errorf("%s output lacks camelCase metadata or status:\n%s", format, out)
		}
		back, err := Parse("out."+format, out)
		if err != nil {
			t.Fatalf("Parse of %s output: %v\n%s", format, err, out)
		}
		want := proto.Clone(in).(*fleetplanev1.Fleet)
		want.Status = nil
		want.ApiVersion, want.Kind = "fleetplane.dev/v1", "Fleet"
		if diff := cmp.Diff(want, back[0].Object, protocmp.Transform()); diff != "" {
			t.Errorf("%s round trip (-want +got):\n%s", format, diff)
		}
	}
}

func TestParseList(t *testing.T) {
	data := `{"apiVersion": "fleetplane.dev/v1", "kind": "List", "items": [
	  {"apiVersion": "fleetplane.dev/v1", "kind": "Device", "metadata": {"name": "a"}},
	  {"apiVersion": "fleetplane.dev/v1", "kind": "Device", "metadata": {"name": "b"},
	   "spec": {"os": {"imag": "x"}}}]}`
	docs, err := Parse("list.json", []byte(data))
	if len(docs) != 1 || docs[0].Location() != "list.json, document 1 item 1" {
		t.Errorf("documents = %v, want device a from item 1", docs)
	}
	want := `list.json: document 1 item 2 (Device/b): spec.os.imag: unknown field; ` +
		`did you mean "image"?`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant %s", err, want)
	}
}

func TestMarshalUnknownFormat(t *testing.T) {
	_, err := Marshal(&fleetplanev1.Device{}, "xml")
	if err == nil || !strings.Contains(err.Error(), "use yaml or json") {
		t.Errorf("Marshal xml error = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(fleetYAML))
	f.Add([]byte("---\n---\nkind: Device\n"))
	f.Add([]byte(`{"apiVersion":"fleetplane.dev/v1","kind":"Device","metadata":{"labels":{"a":1}}}`))
	f.Add([]byte("apiVersion: fleetplane.dev/v1\nkind: Fleet\nspec: {rolloutPolicy: " +
		"{deviceSelection: {sequence: [{limit: {a: [1]}}]}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := Parse("fuzz.yaml", data)
		for _, d := range docs {
			if d.Object == nil || d.Kind == nil {
				t.Fatalf("document %d has no object or kind", d.Index)
			}
			if _, err := Marshal(d.Object, FormatYAML); err != nil {
				t.Fatalf("Marshal of parsed document: %v", err)
			}
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

func TestParseDocumentNumbers(t *testing.T) {
	const device = "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata:\n  name: BAD%d\n"
	tests := []struct {
		name     string
		data     string
		document int
	}{
		{"leading marker", "---\n" + device, 1},
		{"comment and marker", "# devices\n---  # first\n" + device, 1},
		{"empty documents", "---\n---\n...\n---\n" + device, 1},
		{"second document", "---\n" + strings.Replace(device, "BAD%d", "ok", 1) + "---\n" +
			device, 2},
		{"content on the marker line", "apiVersion: fleetplane.dev/v1\nkind: Device\n" +
			"metadata: {name: ok}\n--- {apiVersion: fleetplane.dev/v1, kind: Device, " +
			"metadata: {name: BAD%d}}\n", 2},
		{"end marker", "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata: {name: ok}\n" +
			"...\n" + device, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := fmt.Sprintf(tt.data, tt.document)
			_, err := Parse("f.yaml", []byte(data))
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Parse error = %v, want *Error", err)
			}
			if perr.Document != tt.document {
				t.Errorf("Document = %d, want %d (error: %v)", perr.Document, tt.document, err)
			}
			if perr.Field != "metadata.name" {
				t.Errorf("Field = %q, want metadata.name", perr.Field)
			}
			if perr.Name != fmt.Sprintf("BAD%d", tt.document) {
				t.Errorf("Name = %q, want BAD%d", perr.Name, tt.document)
			}
			want := fmt.Sprintf("f.yaml: document %d (Device/BAD%d)", tt.document, tt.document)
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("message %q does not start with %q", err, want)
			}
		})
	}
}

func TestParseDuplicateKey(t *testing.T) {
	tests := []struct {
		name  string
		data  string
		field string
		line  int
	}{
		{"block mapping", "---\napiVersion: fleetplane.dev/v1\nkind: Device\nmetadata:\n" +
			"  name: dup\n  name: dup2\n", "metadata.name", 6},
		{"flow mapping", "apiVersion: fleetplane.dev/v1\nkind: Device\n" +
			"metadata: {name: dup, name: dup2}\n", "metadata.name", 3},
		{"JSON", `{"apiVersion": "fleetplane.dev/v1", "kind": "Device",` + "\n" +
			`"metadata": {"name": "d", "labels": {"a": "1", "a": "2"}}}`, "metadata.labels.a", 2},
		{"list item", "apiVersion: fleetplane.dev/v1\nkind: Fleet\nmetadata: {name: f}\n" +
			"spec:\n  template:\n    spec:\n      config:\n        - name: a\n" +
			"          name: b\n", "spec.template.spec.config[0].name", 9},
		{"label key with a dot", "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata:\n" +
			"  name: d\n  labels:\n    example.com/site: a\n    example.com/site: b\n",
			`metadata.labels["example.com/site"]`, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := Parse("dup.yaml", []byte(tt.data))
			if len(docs) != 0 {
				t.Errorf("Parse returned %d documents, want none", len(docs))
			}
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Parse error = %v, want *Error", err)
			}
			if perr.Document != 1 {
				t.Errorf("Document = %d, want 1", perr.Document)
			}
			if perr.Field != tt.field {
				t.Errorf("Field = %q, want %q", perr.Field, tt.field)
			}
			if perr.Line != tt.line {
				t.Errorf("Line = %d, want %d", perr.Line, tt.line)
			}
			if !strings.Contains(err.Error(), "duplicate key") {
				t.Errorf("message %q does not say duplicate key", err)
			}
		})
	}
}

func TestParseTypeErrorHidesValue(t *testing.T) {
	const repository = "apiVersion: fleetplane.dev/v1\nkind: Repository\nmetadata: {name: r}\n" +
		"spec:\n  type: http\n  url: https://example.com/r\n"
	tests := []struct {
		name  string
		data  string
		field string
		want  string
	}{
		{"password number", repository + "  httpConfig:\n    password: 991122334455\n",
			"spec.httpConfig.password", "expected a string, got a number; quote the value"},
		{"token boolean", repository + "  httpConfig:\n    token: true\n",
			"spec.httpConfig.token", "expected a string, got a boolean; quote the value"},
		{"passphrase list", repository + "  sshConfig:\n    privateKeyPassphrase: [991122334455]\n",
			"spec.sshConfig.privateKeyPassphrase", "expected a string, got a list"},
		{"image number", "apiVersion: fleetplane.dev/v1\nkind: Device\nmetadata: {name: d}\n" +
			"spec:\n  os:\n    image: 991122334455\n", "spec.os.image",
			"expected a string, got a number; quote the value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("r.yaml", []byte(tt.data))
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Parse error = %v, want *Error", err)
			}
			if perr.Field != tt.field {
				t.Errorf("Field = %q, want %q", perr.Field, tt.field)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("message %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "991122334455") || strings.Contains(err.Error(), "true") {
				t.Errorf("message %q contains the value", err)
			}
		})
	}
}

func TestParseObjectTooLarge(t *testing.T) {
	content := strings.Repeat("a", MaxRequestBytes)
	data := "apiVersion: fleetplane.dev/v1\nkind: Fleet\nmetadata: {name: big}\n---\n" +
		"apiVersion: fleetplane.dev/v1\nkind: Fleet\nmetadata: {name: big}\nspec:\n" +
		"  template:\n    spec:\n      config:\n        - name: a\n          inline:\n" +
		"            - path: /a\n              content: " + content + "\n"
	docs, err := Parse("big.yaml", []byte(data))
	if len(docs) != 1 {
		t.Errorf("Parse returned %d documents, want the small one", len(docs))
	}
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("Parse error = %v, want *Error", err)
	}
	if perr.Document != 2 {
		t.Errorf("Document = %d, want 2", perr.Document)
	}
	for _, want := range []string{"(Fleet/big)", "server's limit of 4.00 MiB", "repository"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not contain %q", err, want)
		}
	}
}

func TestRequestSizeMatchesEncoding(t *testing.T) {
	docs, err := Parse("fleet.yaml", []byte(fleetYAML))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	fleet := docs[0].Object.(*fleetplanev1.Fleet)
	encoded, err := proto.Marshal(&fleetplanev1.CreateFleetRequest{Fleet: fleet})
	if err != nil {
		t.Fatal(err)
	}
	if got := requestSize(fleet); got != len(encoded) {
		t.Errorf("requestSize = %d, want the encoded request size %d", got, len(encoded))
	}
}
