package selector

import (
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func TestParseLabelsOperators(t *testing.T) {
	set := map[string]string{"env": "prod", "zone": "a"}
	cases := []struct {
		selector string
		want     bool
	}{
		{"", true},
		{"env=prod", true},
		{"env==prod", true},
		{"env!=prod", false},
		{"zone in (a,b)", true},
		{"zone notin (a,b)", false},
		{"env", true},
		{"!env", false},
		{"!canary", true},
		{"env=prod,zone=b", false},
	}
	for _, c := range cases {
		sel, err := ParseLabels(c.selector)
		if err != nil {
			t.Fatalf("ParseLabels(%q): %v", c.selector, err)
		}
		if got := sel.Matches(set); got != c.want {
			t.Errorf("ParseLabels(%q).Matches(%v) = %v, want %v", c.selector, set, got, c.want)
		}
	}
}

func TestParseLabelsInvalid(t *testing.T) {
	for _, s := range []string{"=x", "zone in (a", "a b", "env=pr od"} {
		if _, err := ParseLabels(s); err == nil {
			t.Errorf("ParseLabels(%q) succeeded, want an error", s)
		}
	}
}

func TestFromLabelSelectorEmptyMatchesAll(t *testing.T) {
	sel, err := FromLabelSelector(&fleetplanev1.LabelSelector{MatchLabels: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Empty() {
		t.Errorf("selector from empty matchLabels is not Empty: %q", sel.String())
	}
}

func TestFromLabelSelectorExpressions(t *testing.T) {
	sel, err := FromLabelSelector(&fleetplanev1.LabelSelector{
		MatchLabels: map[string]string{"a": "1"},
		MatchExpressions: []*fleetplanev1.LabelSelectorRequirement{
			{Key: "b", Operator: "In", Values: []string{"2", "3"}},
			{Key: "c", Operator: "DoesNotExist"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(map[string]string{"a": "1", "b": "3"}) {
		t.Error("selector does not match a=1,b=3")
	}
	if sel.Matches(map[string]string{"a": "1", "b": "3", "c": "x"}) {
		t.Error("selector matches a device with label c")
	}
	if _, err := FromLabelSelector(&fleetplanev1.LabelSelector{
		MatchExpressions: []*fleetplanev1.LabelSelectorRequirement{{Key: "b", Operator: "Like"}},
	}); err == nil {
		t.Error("operator Like was accepted")
	}
}

func TestParseFieldsMatches(t *testing.T) {
	dev := &fleetplanev1.Device{
		Metadata: &fleetplanev1.ObjectMeta{Name: "d1", Owner: "Fleet/edge"},
		Status:   &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Online"}},
	}
	cases := []struct {
		selector string
		want     bool
	}{
		{"metadata.name=d1", true},
		{"metadata.owner=Fleet/edge", true},
		{"metadata.owner!=Fleet/edge", false},
		{"status.summary.status=Online", true},
		{"status.updated.status=UpToDate", false},
		{"status.updated.status=", true},
	}
	for _, c := range cases {
		sel, err := ParseFields(c.selector, &fleetplanev1.Device{})
		if err != nil {
			t.Fatalf("ParseFields(%q): %v", c.selector, err)
		}
		if got := sel.Matches(dev); got != c.want {
			t.Errorf("ParseFields(%q).Matches = %v, want %v", c.selector, got, c.want)
		}
	}
}

func TestParseFieldsUnknownPath(t *testing.T) {
	for _, s := range []string{"metadata.nme=x", "spec=x", "metadata.labels=x", "status.summary.status.x=y"} {
		if _, err := ParseFields(s, &fleetplanev1.Device{}); err == nil {
			t.Errorf("ParseFields(%q) succeeded, want an error", s)
		}
	}
}

func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{"", "a=b", "a in (x,y)", "!a", "a notin (b),c!=d", "a==b,", "(", "a in ("} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseLabels(s)
		if err != nil {
			return
		}
		sel.Matches(map[string]string{"a": "b"})
		// A parsed selector prints to text that parses again to the same selector.
		again, err := ParseLabels(sel.String())
		if err != nil {
			t.Fatalf("ParseLabels(%q).String() = %q does not parse: %v", s, sel.String(), err)
		}
		if again.String() != sel.String() {
			t.Fatalf("round trip of %q changed %q to %q", s, sel.String(), again.String())
		}
	})
}

func FuzzParseFields(f *testing.F) {
	for _, s := range []string{"", "metadata.name=a", "status.summary.status!=Online", "a.b.c=d", "==", "x=\\,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseFields(s, &fleetplanev1.Device{})
		if err != nil {
			return
		}
		sel.Matches(&fleetplanev1.Device{})
	})
}
