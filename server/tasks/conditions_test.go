package tasks

import (
	"testing"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func TestSetConditionUnchanged(t *testing.T) {
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	valid := func() *fleetplanev1.Condition {
		return &fleetplanev1.Condition{Type: "Valid", Status: "True", Reason: "R", Message: "m"}
	}
	conditions, _ := setCondition(nil, valid(), first)

	got, changed := setCondition(conditions, valid(), first.Add(time.Hour))

	if changed {
		t.Error("setCondition reported a change for an equal condition")
	}
	if !got[0].GetLastTransitionTime().AsTime().Equal(first) {
		t.Errorf("transition time = %v, want %v", got[0].GetLastTransitionTime().AsTime(), first)
	}
}

func TestSetConditionMessageChanged(t *testing.T) {
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	conditions, _ := setCondition(nil, &fleetplanev1.Condition{Type: "Valid", Status: "True", Message: "a"}, first)

	next := &fleetplanev1.Condition{Type: "Valid", Status: "True", Message: "b"}
	got, changed := setCondition(conditions, next, first.Add(time.Hour))

	if !changed {
		t.Fatal("setCondition reported no change for a new message")
	}
	if got[0].GetMessage() != "b" {
		t.Errorf("message = %q, want b", got[0].GetMessage())
	}
	if !got[0].GetLastTransitionTime().AsTime().Equal(first) {
		t.Errorf("transition time = %v, want it kept while the status holds", got[0].GetLastTransitionTime().AsTime())
	}
	if conditions[0].GetMessage() != "a" {
		t.Errorf("setCondition changed its input: message = %q", conditions[0].GetMessage())
	}
}

func TestSetConditionStatusChanged(t *testing.T) {
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	later := first.Add(time.Hour)
	conditions, _ := setCondition(nil, &fleetplanev1.Condition{Type: "Valid", Status: "True"}, first)
	conditions, _ = setCondition(conditions, &fleetplanev1.Condition{Type: "Other", Status: "True"}, first)

	got, changed := setCondition(conditions, &fleetplanev1.Condition{Type: "Valid", Status: "False"}, later)

	if !changed {
		t.Fatal("setCondition reported no change for a new status")
	}
	if len(got) != 2 {
		t.Fatalf("conditions = %v, want two", got)
	}
	if !got[0].GetLastTransitionTime().AsTime().Equal(later) {
		t.Errorf("transition time = %v, want %v", got[0].GetLastTransitionTime().AsTime(), later)
	}
}

func TestRemoveCondition(t *testing.T) {
	conditions := []*fleetplanev1.Condition{{Type: "A"}, {Type: "B"}}

	got, removed := removeCondition(conditions, "A")
	if !removed || len(got) != 1 || got[0].GetType() != "B" {
		t.Errorf("removeCondition(A) = %v, %v; want [B], true", got, removed)
	}
	if _, removed := removeCondition(got, "A"); removed {
		t.Error("removeCondition reported removing a missing type")
	}
}
