package tasks

import (
	"strings"
	"testing"

	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
)

// A template can build a value that the device API rejects, such as a path with "..", out of
// parts that each pass fleet validation. The rollout must check the rendered spec.
func TestRolloutRenderedSpecInvalid(t *testing.T) {
	tests := []struct {
		name  string
		path  string
		label string
		want  string
	}{
		{"dot dot from replace", `/etc/{{ replace "a" "." "aa" }}/x`, "",
			`spec.config[0].inline[0].path: must not contain ".."`},
		{"relative from label", `{{ .metadata.labels.dir }}/x`, "etc",
			"spec.config[0].inline[0].path: must be an absolute path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := openStore(t)
			r := newRunner(Deps{Store: st})
			f := fleet("f", map[string]string{"a": "1"}, "hello")
			f.Spec.Template.Spec.Config[0].Inline[0].Path = tt.path
			create(t, st, f)
			create(t, st, device("d", map[string]string{"a": "1", "dir": tt.label}))

			drain(t, st, r)

			d := getDevice(t, st, "d")
			if got := d.GetSpec().GetOs().GetImage(); got != "base" {
				t.Errorf("device spec changed: os.image = %q, want base", got)
			}
			if got := d.GetSpec().GetConfig(); len(got) != 0 {
				t.Errorf("device spec has config %v, want the previous spec without config", got)
			}
			c := condition(d.GetStatus().GetConditions(), ConditionTemplateApplied)
			if c.GetStatus() != statusFalse || c.GetReason() != reasonTemplateNotRender {
				t.Fatalf("TemplateApplied = %v, want False/%s", c, reasonTemplateNotRender)
			}
			if !strings.Contains(c.GetMessage(), tt.want) {
				t.Errorf("TemplateApplied message = %q, want it to contain %q", c.GetMessage(), tt.want)
			}
			want := []string{reasonTemplateNotRender}
			if diff := cmp.Diff(want, warnings(t, st, store.KindDevice, "d")); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}
