package tasks

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

func TestDeviceRenderFiles(t *testing.T) {
	st := openStore(t)
	n := &notifier{}
	r := newRunner(Deps{Store: st, Notify: n.notify})
	d := device("d", nil)
	d.Spec = &fleetplanev1.DeviceSpec{
		Os: &fleetplanev1.DeviceOsSpec{Image: "os:1"},
		Config: []*fleetplanev1.ConfigProviderSpec{{
			Name: "files",
			Inline: []*fleetplanev1.FileSpec{
				{Path: "/etc/plain", Content: "hello"},
				{Path: "/etc/b64", Content: base64.StdEncoding.EncodeToString([]byte{0, 1, 2}),
					ContentEncoding: "base64", Mode: 0o600, User: "app", Group: "app"},
			},
		}},
		Applications: []*fleetplanev1.ApplicationProviderSpec{{Name: "web", Image: "web:2", EnvVars: map[string]string{"A": "1"}}},
		Systemd:      &fleetplanev1.DeviceSystemdSpec{MatchPatterns: []string{"app-*.service"}},
	}
	create(t, st, d)

	drain(t, st, r)

	got := getRendered(t, st, "d")
	want := &fleetplanev1.RenderedDeviceSpec{
		RenderedVersion: "1",
		Os:              &fleetplanev1.DeviceOsSpec{Image: "os:1"},
		Files: []*fleetplanev1.RenderedFile{
			{Path: "/etc/plain", Content: []byte("hello"), Mode: 0o644},
			{Path: "/etc/b64", Content: []byte{0, 1, 2}, Mode: 0o600, User: "app", Group: "app"},
		},
		Applications: []*fleetplanev1.ApplicationProviderSpec{{Name: "web", Image: "web:2", EnvVars: map[string]string{"A": "1"}}},
		Systemd:      &fleetplanev1.DeviceSystemdSpec{MatchPatterns: []string{"app-*.service"}},
	}
	ignoreHash := protocmp.IgnoreFields(&fleetplanev1.RenderedDeviceSpec{}, "content_hash")
	if diff := cmp.Diff(want, got, protocmp.Transform(), ignoreHash); diff != "" {
		t.Errorf("rendered spec (-want +got):\n%s", diff)
	}
	if len(got.GetContentHash()) != 64 {
		t.Errorf("content hash = %q, want 64 hex digits", got.GetContentHash())
	}
	c := condition(getDevice(t, st, "d").GetStatus().GetConditions(), ConditionSpecValid)
	if c.GetStatus() != statusTrue {
		t.Errorf("SpecValid = %v, want True", c)
	}
	if got := n.count("d"); got != 1 {
		t.Errorf("Notify calls = %d, want 1", got)
	}
}

func TestDeviceRenderGitRef(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, repository("repo"))
	d := device("d", nil)
	d.Spec = gitSpec("repo")
	create(t, st, d)

	drain(t, st, r)

	c := condition(getDevice(t, st, "d").GetStatus().GetConditions(), ConditionSpecValid)
	if c.GetStatus() != statusFalse || c.GetReason() != reasonUnsupportedSource {
		t.Fatalf("SpecValid = %v, want False/%s", c, reasonUnsupportedSource)
	}
	if !strings.Contains(c.GetMessage(), "spec.config[0].gitRef") {
		t.Errorf("SpecValid message = %q, want it to name spec.config[0].gitRef", c.GetMessage())
	}
	if got := getRendered(t, st, "d"); got != nil {
		t.Errorf("rendered spec = %v, want none", got)
	}
	if diff := cmp.Diff([]string{reasonSpecRejected}, warnings(t, st, store.KindDevice, "d")); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

func TestDeviceRenderKeepsLastGoodSpec(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	d := device("d", nil)
	d.Spec = inlineSpec("good")
	create(t, st, d)
	drain(t, st, r)

	update(t, st, store.KindDevice, "d", func(d *fleetplanev1.Device) {
		d.Spec.Config[0].Inline[0].ContentEncoding = "base64"
		d.Spec.Config[0].Inline[0].Content = "not base64!"
	})
	drain(t, st, r)

	if got := fileContent(getRendered(t, st, "d"), "/etc/app.conf"); got != "good" {
		t.Errorf("rendered content = %q, want the last good spec (good)", got)
	}
	c := condition(getDevice(t, st, "d").GetStatus().GetConditions(), ConditionSpecValid)
	if c.GetStatus() != statusFalse || !strings.Contains(c.GetMessage(), "spec.config[0].inline[0].content: invalid base64") {
		t.Errorf("SpecValid = %v, want False naming the content", c)
	}
}

func TestDeviceRenderDeleted(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, device("d", nil))
	drain(t, st, r)
	if getRendered(t, st, "d") == nil {
		t.Fatal("device has no rendered spec after create")
	}

	remove(t, st, store.KindDevice, "d")
	drain(t, st, r)

	if got := getRendered(t, st, "d"); got != nil {
		t.Errorf("rendered spec after delete = %v, want none", got)
	}
}

func TestRenderDeviceSpecProblems(t *testing.T) {
	spec := &fleetplanev1.DeviceSpec{Config: []*fleetplanev1.ConfigProviderSpec{
		{Inline: []*fleetplanev1.FileSpec{
			{Path: "relative", Content: "x"},
			{Path: "/a", Content: "x", ContentEncoding: "gzip"},
			{Path: "/b", Content: "x", Mode: -1},
			{Path: "/c", Content: "x"},
		}},
		{Inline: []*fleetplanev1.FileSpec{{Path: "/c", Content: "y"}}},
		{HttpRef: &fleetplanev1.HttpConfigProviderSpec{Repository: "r"}, GitRef: &fleetplanev1.GitConfigProviderSpec{Repository: "r"}},
		{HttpRef: &fleetplanev1.HttpConfigProviderSpec{Repository: "r"}},
	}}

	_, err := RenderDeviceSpec(spec)

	if err == nil {
		t.Fatal("RenderDeviceSpec accepted an invalid spec")
	}
	for _, want := range []string{
		`spec.config[0].inline[0].path: "relative" is not an absolute path`,
		`spec.config[0].inline[1].contentEncoding: "gzip" is not supported`,
		"spec.config[0].inline[2].mode: -1 is not a file mode",
		"spec.config[1].inline[0].path: /c is also written by spec.config[0].inline[3]",
		"spec.config[2]: set exactly one of inline, gitRef and httpRef",
		"spec.config[3].httpRef: config from HTTP repositories is not supported yet",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("RenderDeviceSpec error = %q, want it to contain %q", err, want)
		}
	}
}

func TestRenderDeviceSpecHash(t *testing.T) {
	spec := func(env map[string]string) *fleetplanev1.DeviceSpec {
		return &fleetplanev1.DeviceSpec{Applications: []*fleetplanev1.ApplicationProviderSpec{{Name: "a", EnvVars: env}}}
	}
	env := map[string]string{}
	for _, k := range []string{"A", "B", "C", "D", "E", "F", "G", "H"} {
		env[k] = strings.ToLower(k)
	}
	first, err := RenderDeviceSpec(spec(env))
	if err != nil {
		t.Fatalf("RenderDeviceSpec: %v", err)
	}

	for i := 0; i < 20; i++ {
		again, err := RenderDeviceSpec(spec(env))
		if err != nil {
			t.Fatalf("RenderDeviceSpec: %v", err)
		}
		if again.GetContentHash() != first.GetContentHash() {
			t.Fatalf("hash of the same content changed: %s -> %s", first.GetContentHash(), again.GetContentHash())
		}
	}
	env["A"] = "changed"
	changed, err := RenderDeviceSpec(spec(env))
	if err != nil {
		t.Fatalf("RenderDeviceSpec: %v", err)
	}
	if changed.GetContentHash() == first.GetContentHash() {
		t.Error("hash did not change with the content")
	}
}

func TestDeviceRenderMissingDevice(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})

	if err := r.deviceRender(context.Background(), "Device/none"); err != nil {
		t.Errorf("DeviceRender of a missing device: %v", err)
	}
}
