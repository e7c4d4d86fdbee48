package main

import (
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
)

func TestWithOwnedSpec(t *testing.T) {
	spec := &fleetplanev1.DeviceSpec{Os: &fleetplanev1.DeviceOsSpec{Image: "os:2"}}
	owned := &fleetplanev1.Device{
		Metadata: &fleetplanev1.ObjectMeta{Name: "d", Owner: "Fleet/demo"}, Spec: spec}
	unowned := &fleetplanev1.Device{Metadata: &fleetplanev1.ObjectMeta{Name: "d"}, Spec: spec}
	bare := &fleetplanev1.Device{Metadata: &fleetplanev1.ObjectMeta{Name: "d",
		Labels: map[string]string{"site": "b"}}}
	withSpec := &fleetplanev1.Device{Metadata: &fleetplanev1.ObjectMeta{Name: "d"},
		Spec: &fleetplanev1.DeviceSpec{}}

	got := withOwnedSpec(owned, bare).(*fleetplanev1.Device)
	if !proto.Equal(got.GetSpec(), spec) {
		t.Errorf("owned device, file without spec: spec = %v, want the fleet's", got.GetSpec())
	}
	if got.GetMetadata().GetLabels()["site"] != "b" {
		t.Error("owned device, file without spec: labels from the file were lost")
	}
	if bare.Spec != nil {
		t.Error("withOwnedSpec changed its argument")
	}
	if got := withOwnedSpec(unowned, bare).(*fleetplanev1.Device); got.Spec != nil {
		t.Errorf("unowned device: spec = %v, want the file's (none)", got.GetSpec())
	}
	if got := withOwnedSpec(owned, withSpec).(*fleetplanev1.Device); got.GetSpec().GetOs() != nil {
		t.Errorf("file with a spec: spec = %v, want the file's", got.GetSpec())
	}
}
