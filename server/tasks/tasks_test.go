package tasks

import (
	"context"
	"slices"
	"strings"
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
)

// latestVersion returns the change log's latest version, to check that a step wrote nothing.
func latestVersion(t *testing.T, st store.Store) int64 {
	t.Helper()
	var v int64
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		var err error
		v, err = tx.LatestVersion(ctx)
		return err
	})
	return v
}

// warnings returns the reasons of the Warning events about the named object, newest first.
func warnings(t *testing.T, st store.Store, kind, name string) []string {
	t.Helper()
	var reasons []string
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		page, err := tx.List(ctx, store.KindEvent, store.ListOptions{
			FieldSelector: "involvedObject.kind=" + kind + ",involvedObject.name=" + name + ",type=Warning",
		})
		if err != nil {
			return err
		}
		for _, obj := range page.Items {
			reasons = append(reasons, obj.(*fleetplanev1.Event).GetReason())
		}
		return nil
	})
	return reasons
}

func TestSelectorMatchEmptySelector(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	noSelector := fleet("none", nil, "x")
	noSelector.Spec.Selector = nil
	create(t, st, noSelector)
	create(t, st, fleet("empty", map[string]string{}, "x"))
	create(t, st, fleet("owner", map[string]string{"a": "1"}, "x"))
	create(t, st, device("d1", map[string]string{"a": "1"}))
	create(t, st, device("d2", nil))

	drain(t, st, r)

	want := map[string]string{"d1": "Fleet/owner", "d2": ""}
	if diff := cmp.Diff(want, owners(t, st)); diff != "" {
		t.Errorf("owners (-want +got):\n%s", diff)
	}
	if c := condition(getDevice(t, st, "d1").GetStatus().GetConditions(), ConditionMultipleOwners); c != nil {
		t.Errorf("d1 has condition %v; empty selectors must not compete", c)
	}

	late := fleet("late", map[string]string{}, "x")
	late.Spec.Selector.MatchExpressions = []*fleetplanev1.LabelSelectorRequirement{}
	create(t, st, late)
	drain(t, st, r)
	if got := getDevice(t, st, "d1").GetMetadata().GetOwner(); got != "Fleet/owner" {
		t.Errorf("d1 owner after an empty fleet was added = %q, want Fleet/owner", got)
	}
}

func TestSelectorMatchReleaseAndDelete(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, fleet("f", map[string]string{"a": "1", "b": "2"}, "conf"))
	create(t, st, device("d1", map[string]string{"a": "1", "b": "2"}))
	create(t, st, device("d2", map[string]string{"a": "1", "b": "2"}))
	drain(t, st, r)
	if diff := cmp.Diff(map[string]string{"d1": "Fleet/f", "d2": "Fleet/f"}, owners(t, st)); diff != "" {
		t.Fatalf("owners after create (-want +got):\n%s", diff)
	}

	update(t, st, store.KindDevice, "d2", func(d *fleetplanev1.Device) { d.Metadata.Labels["b"] = "3" })
	drain(t, st, r)
	if diff := cmp.Diff(map[string]string{"d1": "Fleet/f", "d2": ""}, owners(t, st)); diff != "" {
		t.Errorf("owners after relabel (-want +got):\n%s", diff)
	}
	if got := getDevice(t, st, "d2").GetSpec().GetConfig()[0].GetInline()[0].GetContent(); got != "conf" {
		t.Errorf("released d2 content = %q, want its last spec kept (conf)", got)
	}

	remove(t, st, store.KindFleet, "f")
	drain(t, st, r)
	if diff := cmp.Diff(map[string]string{"d1": "", "d2": ""}, owners(t, st)); diff != "" {
		t.Errorf("owners after fleet delete (-want +got):\n%s", diff)
	}

	before := latestVersion(t, st)
	if err := r.fleetRollout(context.Background(), "Fleet/f"); err != nil {
		t.Errorf("FleetRollout of deleted fleet: %v", err)
	}
	if after := latestVersion(t, st); after != before {
		t.Errorf("FleetRollout of deleted fleet wrote: version %d -> %d", before, after)
	}
}

func TestSelectorMatchMultipleOwners(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, fleet("f1", map[string]string{"a": "1"}, "x"))
	create(t, st, device("d", map[string]string{"a": "1", "b": "1"}))
	drain(t, st, r)
	if got := getDevice(t, st, "d").GetMetadata().GetOwner(); got != "Fleet/f1" {
		t.Fatalf("owner = %q, want Fleet/f1", got)
	}

	create(t, st, fleet("f0", map[string]string{"b": "1"}, "x"))
	drain(t, st, r)
	d := getDevice(t, st, "d")
	if got := d.GetMetadata().GetOwner(); got != "" {
		t.Errorf("owner with two matching fleets = %q, want none", got)
	}
	c := condition(d.GetStatus().GetConditions(), ConditionMultipleOwners)
	if c.GetStatus() != statusTrue {
		t.Fatalf("MultipleOwners = %v, want True", c)
	}
	if !strings.Contains(c.GetMessage(), "f0, f1") {
		t.Errorf("MultipleOwners message = %q, want the fleets sorted (f0, f1)", c.GetMessage())
	}
	if got := warnings(t, st, store.KindDevice, "d"); !slices.Equal(got, []string{reasonMultipleFleetsMatch}) {
		t.Errorf("Warning events of d = %v, want one %s", got, reasonMultipleFleetsMatch)
	}
	// Running the match again with nothing changed records no second event.
	update(t, st, store.KindDevice, "d", func(d *fleetplanev1.Device) { d.Metadata.Labels["c"] = "1" })
	drain(t, st, r)
	if got := warnings(t, st, store.KindDevice, "d"); len(got) != 1 {
		t.Errorf("Warning events of d after an unrelated label change = %v, want still one", got)
	}

	update(t, st, store.KindFleet, "f0", func(f *fleetplanev1.Fleet) { f.Spec.Selector.MatchLabels["b"] = "2" })
	drain(t, st, r)
	d = getDevice(t, st, "d")
	if got := d.GetMetadata().GetOwner(); got != "Fleet/f1" {
		t.Errorf("owner after resolving = %q, want Fleet/f1", got)
	}
	if c := condition(d.GetStatus().GetConditions(), ConditionMultipleOwners); c != nil {
		t.Errorf("MultipleOwners after resolving = %v, want it cleared", c)
	}
}

func TestSelectorMatchContestedFleetDeleted(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, fleet("f1", map[string]string{"a": "1"}, "x"))
	create(t, st, fleet("f2", map[string]string{"a": "1"}, "x"))
	create(t, st, device("d", map[string]string{"a": "1"}))
	drain(t, st, r)

	remove(t, st, store.KindFleet, "f2")
	drain(t, st, r)

	d := getDevice(t, st, "d")
	if got := d.GetMetadata().GetOwner(); got != "Fleet/f1" {
		t.Errorf("owner = %q, want Fleet/f1", got)
	}
	if c := condition(d.GetStatus().GetConditions(), ConditionMultipleOwners); c != nil {
		t.Errorf("MultipleOwners = %v, want it cleared", c)
	}
}

func TestRolloutConditionWithoutLabel(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, fleet("f", map[string]string{"a": "1"}, `{{ if eq .metadata.labels.env "prod" }}A{{ else }}B{{ end }}`))
	create(t, st, device("d", map[string]string{"a": "1"}))

	drain(t, st, r)

	if got := fileContent(getRendered(t, st, "d"), "/etc/app.conf"); got != "B" {
		t.Errorf("rendered content = %q, want B", got)
	}
	if got := getDevice(t, st, "d").GetMetadata().GetAnnotations()[TemplateVersionAnnotation]; got != "f-1" {
		t.Errorf("template version annotation = %q, want f-1", got)
	}
}

func TestRolloutRelabelNewVersion(t *testing.T) {
	st := openStore(t)
	n := &notifier{}
	r := newRunner(Deps{Store: st, Notify: n.notify})
	create(t, st, fleet("f", map[string]string{"a": "1"}, "zone={{ .metadata.labels.zone }}"))
	create(t, st, device("d", map[string]string{"a": "1", "zone": "a"}))
	drain(t, st, r)
	first := getRendered(t, st, "d")
	if got := fileContent(first, "/etc/app.conf"); got != "zone=a" {
		t.Fatalf("rendered content = %q, want zone=a", got)
	}

	update(t, st, store.KindDevice, "d", func(d *fleetplanev1.Device) { d.Metadata.Labels["zone"] = "b" })
	drain(t, st, r)
	second := getRendered(t, st, "d")
	if got := fileContent(second, "/etc/app.conf"); got != "zone=b" {
		t.Errorf("rendered content = %q, want zone=b", got)
	}
	if second.GetRenderedVersion() <= first.GetRenderedVersion() {
		t.Errorf("rendered version %s -> %s, want it to increase", first.GetRenderedVersion(), second.GetRenderedVersion())
	}
	notified := n.count("d")

	before := latestVersion(t, st)
	if err := r.deviceRender(context.Background(), "Device/d"); err != nil {
		t.Fatalf("DeviceRender: %v", err)
	}
	if third := getRendered(t, st, "d"); third.GetRenderedVersion() != second.GetRenderedVersion() {
		t.Errorf("re-render changed the version %s -> %s", second.GetRenderedVersion(), third.GetRenderedVersion())
	}
	if after := latestVersion(t, st); after != before {
		t.Errorf("re-render wrote: version %d -> %d", before, after)
	}
	if got := n.count("d"); got != notified {
		t.Errorf("Notify calls = %d after a re-render, want %d", got, notified)
	}
}

func TestRolloutMissingLabel(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, fleet("f", map[string]string{"a": "1"}, "zone={{ .metadata.labels.zone }}"))
	create(t, st, device("good", map[string]string{"a": "1", "zone": "z1"}))
	create(t, st, device("bad", map[string]string{"a": "1"}))

	drain(t, st, r)

	if got := fileContent(getRendered(t, st, "good"), "/etc/app.conf"); got != "zone=z1" {
		t.Errorf("good content = %q, want zone=z1", got)
	}
	bad := getDevice(t, st, "bad")
	if got := bad.GetSpec().GetOs().GetImage(); got != "base" {
		t.Errorf("bad device spec changed: os.image = %q, want base", got)
	}
	c := condition(bad.GetStatus().GetConditions(), ConditionTemplateApplied)
	if c.GetStatus() != statusFalse || c.GetReason() != reasonMissingLabel {
		t.Fatalf("TemplateApplied = %v, want False/MissingLabel", c)
	}
	want := "device bad has no label zone, which spec.config[0].inline[0].content uses"
	if !strings.Contains(c.GetMessage(), want) {
		t.Errorf("TemplateApplied message = %q, want it to contain %q", c.GetMessage(), want)
	}
	if diff := cmp.Diff([]string{reasonMissingLabel}, warnings(t, st, store.KindDevice, "bad")); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}

	update(t, st, store.KindDevice, "bad", func(d *fleetplanev1.Device) { d.Metadata.Labels["zone"] = "z2" })
	drain(t, st, r)
	c = condition(getDevice(t, st, "bad").GetStatus().GetConditions(), ConditionTemplateApplied)
	if c.GetStatus() != statusTrue {
		t.Errorf("TemplateApplied after adding the label = %v, want True", c)
	}
}

func TestRolloutCurrentDeviceNoWrite(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, fleet("f", map[string]string{"a": "1"}, "{{ .metadata.name }}"))
	create(t, st, device("d", map[string]string{"a": "1"}))
	drain(t, st, r)

	before := latestVersion(t, st)
	for _, key := range []string{"Fleet/f", "Device/d"} {
		if err := r.fleetRollout(context.Background(), key); err != nil {
			t.Fatalf("FleetRollout %s: %v", key, err)
		}
	}
	if after := latestVersion(t, st); after != before {
		t.Errorf("FleetRollout of a current device wrote: version %d -> %d", before, after)
	}
	if got := pendingTasks(t, st); len(got) != 0 {
		t.Errorf("tasks after a no-op rollout = %v, want none", got)
	}
}

func TestFleetValidateInvalid(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	f := fleet("f", map[string]string{"a": "1"}, "{{ .spec.os }}")
	f.Spec.Template.Spec.Config = append(f.Spec.Template.Spec.Config, gitSpec("missing").Config...)
	create(t, st, f)

	drain(t, st, r)

	c := condition(getFleet(t, st, "f").GetStatus().GetConditions(), ConditionValid)
	if c.GetStatus() != statusFalse {
		t.Fatalf("Valid = %v, want False", c)
	}
	for _, want := range []string{
		"spec.template.spec.config[0].inline[0].content:1:", "field .spec.os is not available",
		`spec.template.spec.config[1].gitRef.repository: repository "missing" not found`,
	} {
		if !strings.Contains(c.GetMessage(), want) {
			t.Errorf("Valid message = %q, want it to contain %q", c.GetMessage(), want)
		}
	}
	if diff := cmp.Diff([]string{reasonTemplateRejected}, warnings(t, st, store.KindFleet, "f")); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	if got := templateVersions(t, st); len(got) != 0 {
		t.Errorf("template versions = %v, want none for an invalid fleet", got)
	}

	update(t, st, store.KindFleet, "f", func(f *fleetplanev1.Fleet) { f.Spec.Template.Spec = inlineSpec("fixed") })
	drain(t, st, r)
	c = condition(getFleet(t, st, "f").GetStatus().GetConditions(), ConditionValid)
	if c.GetStatus() != statusTrue || c.GetMessage() != "template version f-2" {
		t.Errorf("Valid after fix = %v, want True naming f-2", c)
	}
}

func TestFleetValidateTwice(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, fleet("f", map[string]string{"a": "1"}, "x"))
	drain(t, st, r)
	before := latestVersion(t, st)

	if err := r.fleetValidate(context.Background(), "Fleet/f"); err != nil {
		t.Fatalf("FleetValidate: %v", err)
	}

	if diff := cmp.Diff([]string{"f-1"}, templateVersions(t, st)); diff != "" {
		t.Errorf("template versions (-want +got):\n%s", diff)
	}
	if after := latestVersion(t, st); after != before {
		t.Errorf("second FleetValidate wrote: version %d -> %d", before, after)
	}
}

func TestFleetValidateSnapshot(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, fleet("f", map[string]string{"a": "1"}, "x"))
	drain(t, st, r)

	var tv *fleetplanev1.TemplateVersion
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		obj, err := tx.Get(ctx, store.KindTemplateVersion, "f-1")
		if err != nil {
			return err
		}
		tv = obj.(*fleetplanev1.TemplateVersion)
		return nil
	})
	if got := tv.GetMetadata().GetOwner(); got != "Fleet/f" {
		t.Errorf("owner = %q, want Fleet/f", got)
	}
	if got := tv.GetSpec().GetFleet(); got != "f" {
		t.Errorf("spec.fleet = %q, want f", got)
	}
	if got := tv.GetStatus().GetFleetGeneration(); got != 1 {
		t.Errorf("status.fleetGeneration = %d, want 1", got)
	}
	if got := tv.GetStatus().GetTemplate().GetSpec().GetConfig()[0].GetInline()[0].GetContent(); got != "x" {
		t.Errorf("snapshot content = %q, want x", got)
	}
}

func TestFleetValidateMissingFleet(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	before := latestVersion(t, st)

	if err := r.fleetValidate(context.Background(), "Fleet/none"); err != nil {
		t.Errorf("FleetValidate of a missing fleet: %v", err)
	}
	if after := latestVersion(t, st); after != before {
		t.Errorf("FleetValidate of a missing fleet wrote: version %d -> %d", before, after)
	}
}

func TestTasksInvalidKey(t *testing.T) {
	r := newRunner(Deps{Store: openStore(t)})
	for kind, handler := range r.handlers() {
		for _, key := range []string{"", "nokind", "Event/e", "Device/"} {
			if err := handler(context.Background(), key); err == nil {
				t.Errorf("%s %q: got nil error, want an invalid key error", kind, key)
			}
		}
	}
}

func templateVersions(t *testing.T, st store.Store) []string {
	t.Helper()
	var names []string
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		page, err := tx.List(ctx, store.KindTemplateVersion, store.ListOptions{})
		if err != nil {
			return err
		}
		for _, obj := range page.Items {
			names = append(names, store.Meta(obj).GetName())
		}
		return nil
	})
	return names
}

func TestFleetValidateRepositoryCreated(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	f := fleet("f", map[string]string{"a": "1"}, "")
	f.Spec.Template.Spec = gitSpec("repo")
	create(t, st, f)
	drain(t, st, r)
	if c := condition(getFleet(t, st, "f").GetStatus().GetConditions(), ConditionValid); c.GetStatus() != statusFalse {
		t.Fatalf("Valid without the repository = %v, want False", c)
	}

	create(t, st, repository("repo"))
	drain(t, st, r)

	c := condition(getFleet(t, st, "f").GetStatus().GetConditions(), ConditionValid)
	if c.GetStatus() != statusTrue {
		t.Errorf("Valid after creating the repository = %v, want True", c)
	}
}

func TestFleetValidateRepositoryType(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	repo := repository("repo")
	repo.Spec.Type = "http"
	create(t, st, repo)
	f := fleet("f", map[string]string{"a": "1"}, "")
	f.Spec.Template.Spec = gitSpec("repo")
	create(t, st, f)

	drain(t, st, r)

	c := condition(getFleet(t, st, "f").GetStatus().GetConditions(), ConditionValid)
	want := `repository "repo" has type "http", but gitRef needs a git repository`
	if c.GetStatus() != statusFalse || !strings.Contains(c.GetMessage(), want) {
		t.Errorf("Valid = %v, want False containing %q", c, want)
	}
}

func TestFleetValidateMissingTemplate(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	f := fleet("f", map[string]string{"a": "1"}, "")
	f.Spec.Template = nil
	create(t, st, f)

	drain(t, st, r)

	c := condition(getFleet(t, st, "f").GetStatus().GetConditions(), ConditionValid)
	if c.GetStatus() != statusFalse || !strings.Contains(c.GetMessage(), "spec.template.spec is missing") {
		t.Errorf("Valid = %v, want False naming spec.template.spec", c)
	}
}
