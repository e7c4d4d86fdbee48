// Package storetest is the conformance suite that every store backend must pass.
//
// A backend's test calls Run with a function that opens a new, empty store for one subtest and
// registers its cleanup with t.Cleanup. Subtests do not run in parallel, so a backend may reuse
// one database server as long as each open starts from an empty database.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
)

// Opener opens a new, empty store whose writes call hook (which may be nil).
type Opener func(t *testing.T, hook store.ChangeHook) store.Store

// Run runs every conformance test against the stores that open returns.
func Run(t *testing.T, open func(t *testing.T, hook store.ChangeHook) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"CRUDEveryKind", testCRUDEveryKind},
		{"CreateAlreadyExists", testCreateAlreadyExists},
		{"MissingObjectNotFound", testMissingNotFound},
		{"CreateInvalidObject", testCreateInvalid},
		{"GenerationOnSpecChange", testGeneration},
		{"UpdateKeepsStatus", testUpdateKeepsStatus},
		{"UpdateStatusKeepsSpec", testUpdateStatusKeepsSpec},
		{"UpdateStatusWithoutSpec", testUpdateStatusWithoutSpec},
		{"ResourceVersionConflict", testVersionConflict},
		{"ResourceVersionInvalid", testVersionInvalid},
		{"ConcurrentUpdateOneWins", testConcurrentUpdates},
		{"DeleteAll", testDeleteAll},
		{"SetLastSeenKeepsVersion", testSetLastSeen},
		{"ChangeLogOrder", testChangeLogOrder},
		{"HookInTransaction", testHookInTransaction},
		{"HookErrorRollsBack", testHookErrorRollsBack},
		{"SubscribeAfterCommit", testSubscribe},
		{"RollbackWritesNothing", testRollback},
		{"ListLabelSelector", testListLabelSelector},
		{"ListFieldSelector", testListFieldSelector},
		{"ListPageSize", testListPageSize},
		{"ListInvalidArgument", testListInvalid},
		{"ListPagesUnderChurn", testListUnderChurn},
		{"TaskCoalescing", testTaskCoalescing},
		{"TaskRerunAfterFinish", testTaskRerun},
		{"TaskClaimShardsAndTime", testTaskClaim},
		{"TaskRetryAndFail", testTaskRetry},
		{"TaskFinishNotRunning", testTaskFinishNotRunning},
		{"TaskResetRunning", testTaskResetRunning},
		{"TaskListAndCount", testTaskListAndCount},
		{"LeaseEpochs", testLeaseEpochs},
		{"LeaseInvalidShard", testLeaseInvalidShard},
		{"FenceStaleWritesNothing", testFence},
		{"Replicas", testReplicas},
		{"SessionRegistry", testSessions},
		{"SessionRegistryList", testListSessions},
		{"InitSettingKeepsFirst", testInitSetting},
		{"ShardCountFixed", testShardCount},
		{"RenderedVersion", testRendered},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// inTx runs fn in a transaction and fails the test if it returns an error.
func inTx(t *testing.T, s store.Store, fn func(ctx context.Context, tx store.Tx) error) {
	t.Helper()
	if err := s.InTx(t.Context(), fn); err != nil {
		t.Fatalf("InTx: %v", err)
	}
}

func create(t *testing.T, s store.Store, obj store.Object) store.Object {
	t.Helper()
	var out store.Object
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		out, err = tx.Create(ctx, obj)
		return err
	})
	return out
}

func get(t *testing.T, s store.Store, kind, name string) (store.Object, error) {
	t.Helper()
	var out store.Object
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		var err error
		out, err = tx.Get(ctx, kind, name)
		return err
	})
	return out, err
}

func mustGet(t *testing.T, s store.Store, kind, name string) store.Object {
	t.Helper()
	obj, err := get(t, s, kind, name)
	if err != nil {
		t.Fatalf("Get %s %q: %v", kind, name, err)
	}
	return obj
}

func latestVersion(t *testing.T, s store.Store) int64 {
	t.Helper()
	var v int64
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		v, err = tx.LatestVersion(ctx)
		return err
	})
	return v
}

func device(name string, labels map[string]string, image string) *fleetplanev1.Device {
	return &fleetplanev1.Device{
		Metadata: &fleetplanev1.ObjectMeta{Name: name, Labels: labels},
		Spec:     &fleetplanev1.DeviceSpec{Os: &fleetplanev1.DeviceOsSpec{Image: image}},
	}
}

// createDevices creates devices named fmt.Sprintf(format, i) for i in [from, to), in batches.
func createDevices(t *testing.T, s store.Store, format string, from, to int) {
	t.Helper()
	const batch = 500
	for start := from; start < to; start += batch {
		inTx(t, s, func(ctx context.Context, tx store.Tx) error {
			for i := start; i < min(start+batch, to); i++ {
				if _, err := tx.Create(ctx, device(fmt.Sprintf(format, i), nil, "img")); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

// kindCase makes an object of one kind; variant changes its spec (or, for Event, its body).
type kindCase struct {
	kind string
	make func(name, variant string) store.Object
}

var kindCases = []kindCase{
	{store.KindDevice, func(n, v string) store.Object { return device(n, nil, "os:"+v) }},
	{store.KindFleet, func(n, v string) store.Object {
		return &fleetplanev1.Fleet{Metadata: meta(n), Spec: &fleetplanev1.FleetSpec{
			Selector: &fleetplanev1.LabelSelector{MatchLabels: map[string]string{"fleet": v}},
		}}
	}},
	{store.KindTemplateVersion, func(n, v string) store.Object {
		return &fleetplanev1.TemplateVersion{Metadata: meta(n),
			Spec: &fleetplanev1.TemplateVersionSpec{Fleet: "fleet-" + v}}
	}},
	{store.KindRepository, func(n, v string) store.Object {
		return &fleetplanev1.Repository{Metadata: meta(n),
			Spec: &fleetplanev1.RepositorySpec{Url: "https://git.example/" + v, Type: "git"}}
	}},
	{store.KindResourceSync, func(n, v string) store.Object {
		return &fleetplanev1.ResourceSync{Metadata: meta(n),
			Spec: &fleetplanev1.ResourceSyncSpec{Repository: "repo", Path: "/fleets/" + v}}
	}},
	{store.KindEnrollmentRequest, func(n, v string) store.Object {
		return &fleetplanev1.EnrollmentRequest{Metadata: meta(n),
			Spec: &fleetplanev1.EnrollmentRequestSpec{Csr: "csr-" + v}}
	}},
	{store.KindEvent, func(n, v string) store.Object {
		return &fleetplanev1.Event{Metadata: meta(n), Reason: "Tested", Message: "event " + v,
			InvolvedObject: &fleetplanev1.ObjectReference{Kind: store.KindDevice, Name: "d1"}}
	}},
}

func meta(name string) *fleetplanev1.ObjectMeta {
	return &fleetplanev1.ObjectMeta{Name: name}
}

// waitSignal fails the test unless ch receives within a few seconds.
func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("no Subscribe signal after %s", what)
	}
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v; want %v", what, err, target)
	}
}

// testNow returns the current time cut to microseconds, the finest precision of PostgreSQL
// timestamps, so that times read back compare equal on every backend.
func testNow() time.Time {
	return time.Now().Truncate(time.Microsecond)
}
