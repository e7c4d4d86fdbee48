package client

import (
	"strings"
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func TestResolveKindAliases(t *testing.T) {
	tests := map[string]string{
		"device": "Device", "devices": "Device", "dev": "Device", "Device": "Device",
		"fleet": "Fleet", "fleets": "Fleet",
		"templateversion": "TemplateVersion", "templateversions": "TemplateVersion",
		"tv":         "TemplateVersion",
		"repository": "Repository", "repositories": "Repository", "repo": "Repository",
		"resourcesync": "ResourceSync", "resourcesyncs": "ResourceSync", "rs": "ResourceSync",
		"enrollmentrequest": "EnrollmentRequest", "enrollmentrequests": "EnrollmentRequest",
		"er": "EnrollmentRequest", "csr": "EnrollmentRequest",
		"event": "Event", "events": "Event", "ev": "Event",
		"task": "Task", "tasks": "Task", "replica": "Replica", "replicas": "Replica",
		"devs": "Device", "repos": "Repository", "tvs": "TemplateVersion", "csrs": "EnrollmentRequest",
		"agentsession": "AgentSession", "agentsessions": "AgentSession", "sessions": "AgentSession",
	}
	for alias, want := range tests {
		kind, err := ResolveKind(alias)
		if err != nil {
			t.Errorf("ResolveKind(%q): %v", alias, err)
			continue
		}
		if kind.Name != want {
			t.Errorf("ResolveKind(%q) = %s, want %s", alias, kind.Name, want)
		}
	}
}

func TestResolveKindUnknown(t *testing.T) {
	_, err := ResolveKind("gadget")
	if err == nil {
		t.Fatal("ResolveKind(gadget) returned no error")
	}
	for _, want := range []string{`"gadget"`, "device (dev)", "enrollmentrequest (er, csr)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestKindOfAndCan(t *testing.T) {
	if k := KindOf(&fleetplanev1.Fleet{}); k == nil || k.Name != "Fleet" {
		t.Errorf("KindOf(Fleet) = %v", k)
	}
	if k := KindOf(&fleetplanev1.ListOptions{}); k != nil {
		t.Errorf("KindOf(ListOptions) = %s, want nil", k.Name)
	}
	events, _ := ResolveKind("events")
	if events.Can("get") || !events.Can("list") || !events.Can("watch") {
		t.Errorf("events: get %t list %t watch %t, want false true true",
			events.Can("get"), events.Can("list"), events.Can("watch"))
	}
	rs, _ := ResolveKind("rs")
	if rs.Can("deleteAll") {
		t.Error("resource syncs report deleteAll, which the API does not offer")
	}
}

func TestAgentSessionSelectorRejected(t *testing.T) {
	c := New("http://127.0.0.1:1")
	kind, err := ResolveKind("sessions")
	if err != nil {
		t.Fatal(err)
	}
	for _, selector := range []string{"replica=", "foo=bar", "replica=r1,replica=r2"} {
		_, err := c.List(t.Context(), kind, ListOptions{FieldSelector: selector})
		if err == nil || !strings.Contains(err.Error(), "use replica=ID") {
			t.Errorf("List sessions with %q: error = %v; want one saying to use replica=ID", selector, err)
		}
	}
}
