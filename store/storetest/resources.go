package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
)

func testCRUDEveryKind(t *testing.T, open Opener) {
	s := open(t, nil)
	for _, kc := range kindCases {
		t.Run(kc.kind, func(t *testing.T) {
			before := time.Now().Add(-time.Second)
			created := create(t, s, kc.make("obj-1", "a"))
			m := store.Meta(created)
			if got := store.KindOf(created); got != kc.kind {
				t.Errorf("kind of created object = %q; want %q", got, kc.kind)
			}
			if m.Generation != 1 {
				t.Errorf("generation = %d; want 1", m.Generation)
			}
			if m.ResourceVersion == "" {
				t.Errorf("resource_version is empty")
			}
			if ts := m.GetCreationTimestamp().AsTime(); ts.Before(before) {
				t.Errorf("creation_timestamp = %v; want after %v", ts, before)
			}
			if got := stringField(created, "kind"); got != kc.kind {
				t.Errorf("kind field = %q; want %q", got, kc.kind)
			}
			if got := stringField(created, "api_version"); got != store.APIVersion {
				t.Errorf("api_version field = %q; want %q", got, store.APIVersion)
			}

			got := mustGet(t, s, kc.kind, "obj-1")
			if diff := cmp.Diff(created, got, protocmp.Transform()); diff != "" {
				t.Errorf("Get after Create (-created +got):\n%s", diff)
			}

			var updated store.Object
			inTx(t, s, func(ctx context.Context, tx store.Tx) error {
				var err error
				updated, err = tx.Update(ctx, kc.make("obj-1", "b"))
				return err
			})
			if want := kc.make("obj-1", "b"); !sameBody(updated, want) {
				t.Errorf("Update did not store the new spec: got %v", updated)
			}
			if store.Meta(updated).ResourceVersion == m.ResourceVersion {
				t.Errorf("Update kept resource_version %s", m.ResourceVersion)
			}

			var deleted store.Object
			inTx(t, s, func(ctx context.Context, tx store.Tx) error {
				var err error
				deleted, err = tx.Delete(ctx, kc.kind, "obj-1")
				return err
			})
			if !sameBody(deleted, updated) {
				t.Errorf("Delete returned %v; want the last state %v", deleted, updated)
			}
			_, err := get(t, s, kc.kind, "obj-1")
			wantErr(t, err, store.ErrNotFound, "Get after Delete")
		})
	}
}

// sameBody reports whether a and b are equal apart from metadata, kind and api_version.
func sameBody(a, b store.Object) bool {
	strip := func(o store.Object) store.Object {
		o = proto.Clone(o)
		m := o.ProtoReflect()
		for _, f := range []string{"metadata", "kind", "api_version"} {
			m.Clear(m.Descriptor().Fields().ByName(protoreflect.Name(f)))
		}
		return o
	}
	return proto.Equal(strip(a), strip(b))
}

func stringField(obj store.Object, name string) string {
	m := obj.ProtoReflect()
	return m.Get(m.Descriptor().Fields().ByName(protoreflect.Name(name))).String()
}

func testCreateAlreadyExists(t *testing.T, open Opener) {
	s := open(t, nil)
	create(t, s, device("d1", nil, "img"))
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Create(ctx, device("d1", nil, "other"))
		return err
	})
	wantErr(t, err, store.ErrAlreadyExists, "second Create")
}

func testMissingNotFound(t *testing.T, open Opener) {
	s := open(t, nil)
	ops := map[string]func(ctx context.Context, tx store.Tx) error{
		"Get": func(ctx context.Context, tx store.Tx) error {
			_, err := tx.Get(ctx, store.KindDevice, "nope")
			return err
		},
		"Update": func(ctx context.Context, tx store.Tx) error {
			_, err := tx.Update(ctx, device("nope", nil, "img"))
			return err
		},
		"UpdateStatus": func(ctx context.Context, tx store.Tx) error {
			_, err := tx.UpdateStatus(ctx, device("nope", nil, "img"))
			return err
		},
		"Delete": func(ctx context.Context, tx store.Tx) error {
			_, err := tx.Delete(ctx, store.KindDevice, "nope")
			return err
		},
	}
	for name, op := range ops {
		wantErr(t, s.InTx(t.Context(), op), store.ErrNotFound, name)
	}
}

func testCreateInvalid(t *testing.T, open Opener) {
	s := open(t, nil)
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Create(ctx, device("", nil, "img"))
		return err
	})
	wantErr(t, err, store.ErrInvalidArgument, "Create without a name")
	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Get(ctx, "Gadget", "g1")
		return err
	})
	wantErr(t, err, store.ErrInvalidArgument, "Get of an unknown kind")
}

func testGeneration(t *testing.T, open Opener) {
	s := open(t, nil)
	create(t, s, device("d1", nil, "img-1"))
	update := func(d *fleetplanev1.Device) *fleetplanev1.Device {
		t.Helper()
		var out store.Object
		inTx(t, s, func(ctx context.Context, tx store.Tx) error {
			var err error
			out, err = tx.Update(ctx, d)
			return err
		})
		return out.(*fleetplanev1.Device)
	}

	sameSpec := update(device("d1", map[string]string{"env": "prod"}, "img-1"))
	if got := sameSpec.Metadata.Generation; got != 1 {
		t.Errorf("generation after a label-only update = %d; want 1", got)
	}
	if got := sameSpec.Metadata.Labels["env"]; got != "prod" {
		t.Errorf("label env = %q; want prod", got)
	}
	newSpec := update(device("d1", map[string]string{"env": "prod"}, "img-2"))
	if got := newSpec.Metadata.Generation; got != 2 {
		t.Errorf("generation after a spec change = %d; want 2", got)
	}
	var status store.Object
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		d := proto.Clone(newSpec).(*fleetplanev1.Device)
		d.Status = &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Online"}}
		var err error
		status, err = tx.UpdateStatus(ctx, d)
		return err
	})
	if got := store.Meta(status).Generation; got != 2 {
		t.Errorf("generation after a status update = %d; want 2", got)
	}
}

func testUpdateKeepsStatus(t *testing.T, open Opener) {
	s := open(t, nil)
	created := create(t, s, device("d1", nil, "img-1")).(*fleetplanev1.Device)
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		d := device("d1", nil, "img-1")
		d.Status = &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Online"}}
		_, err := tx.UpdateStatus(ctx, d)
		return err
	})
	var updated *fleetplanev1.Device
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		d := device("d1", nil, "img-2")
		d.Status = &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Error"}}
		d.Metadata.CreationTimestamp = nil
		out, err := tx.Update(ctx, d)
		if err == nil {
			updated = out.(*fleetplanev1.Device)
		}
		return err
	})
	if got := updated.GetStatus().GetSummary().GetStatus(); got != "Online" {
		t.Errorf("status after Update = %q; want the stored Online", got)
	}
	if !updated.Metadata.CreationTimestamp.AsTime().Equal(created.Metadata.CreationTimestamp.AsTime()) {
		t.Errorf("creation_timestamp changed from %v to %v",
			created.Metadata.CreationTimestamp.AsTime(), updated.Metadata.CreationTimestamp.AsTime())
	}
}

func testUpdateStatusKeepsSpec(t *testing.T, open Opener) {
	s := open(t, nil)
	create(t, s, device("d1", map[string]string{"env": "prod"}, "img-1"))
	var out *fleetplanev1.Device
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		d := device("d1", nil, "other")
		d.Status = &fleetplanev1.DeviceStatus{Updated: &fleetplanev1.DeviceUpdatedStatus{Status: "UpToDate"}}
		o, err := tx.UpdateStatus(ctx, d)
		if err == nil {
			out = o.(*fleetplanev1.Device)
		}
		return err
	})
	if got := out.GetSpec().GetOs().GetImage(); got != "img-1" {
		t.Errorf("spec image after UpdateStatus = %q; want img-1", got)
	}
	if got := out.Metadata.Labels["env"]; got != "prod" {
		t.Errorf("label env after UpdateStatus = %q; want prod", got)
	}
	if got := out.GetStatus().GetUpdated().GetStatus(); got != "UpToDate" {
		t.Errorf("status.updated.status = %q; want UpToDate", got)
	}
}

func testUpdateStatusWithoutSpec(t *testing.T, open Opener) {
	s := open(t, nil)
	create(t, s, &fleetplanev1.Device{Metadata: &fleetplanev1.ObjectMeta{Name: "bare"}})
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		d := &fleetplanev1.Device{
			Metadata: &fleetplanev1.ObjectMeta{Name: "bare"},
			Status:   &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Online"}},
		}
		_, err := tx.UpdateStatus(ctx, d)
		return err
	})
	var got store.Object
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		got, err = tx.Get(ctx, store.KindDevice, "bare")
		return err
	})
	if status := got.(*fleetplanev1.Device).GetStatus().GetSummary().GetStatus(); status != "Online" {
		t.Errorf("status.summary.status = %q; want Online", status)
	}
}

func testVersionConflict(t *testing.T, open Opener) {
	s := open(t, nil)
	first := create(t, s, device("d1", nil, "img-1"))
	staleVersion := store.Meta(first).ResourceVersion
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		d := device("d1", nil, "img-2")
		d.Metadata.ResourceVersion = staleVersion
		_, err := tx.Update(ctx, d)
		return err
	})
	for _, op := range []string{"Update", "UpdateStatus"} {
		err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
			d := device("d1", nil, "img-3")
			d.Metadata.ResourceVersion = staleVersion
			if op == "Update" {
				_, err := tx.Update(ctx, d)
				return err
			}
			_, err := tx.UpdateStatus(ctx, d)
			return err
		})
		wantErr(t, err, store.ErrConflict, op+" with a stale resource_version")
	}
	got := mustGet(t, s, store.KindDevice, "d1").(*fleetplanev1.Device)
	if img := got.GetSpec().GetOs().GetImage(); img != "img-2" {
		t.Errorf("image after conflicting update = %q; want img-2", img)
	}
}

func testVersionInvalid(t *testing.T, open Opener) {
	s := open(t, nil)
	create(t, s, device("d1", nil, "img-1"))
	for _, rv := range []string{"abc", "-3", "0"} {
		err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
			d := device("d1", nil, "img-2")
			d.Metadata.ResourceVersion = rv
			_, err := tx.Update(ctx, d)
			return err
		})
		wantErr(t, err, store.ErrInvalidArgument, fmt.Sprintf("Update with resource_version %q", rv))
	}
}

func testConcurrentUpdates(t *testing.T, open Opener) {
	s := open(t, nil)
	create(t, s, device("d1", nil, "img"))
	const rounds = 50
	for round := range rounds {
		rv := store.Meta(mustGet(t, s, store.KindDevice, "d1")).ResourceVersion
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				errs[i] = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
					d := device("d1", nil, fmt.Sprintf("img-%d-%d", round, i))
					d.Metadata.ResourceVersion = rv
					_, err := tx.Update(ctx, d)
					return err
				})
			})
		}
		wg.Wait()
		ok, conflicts := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrConflict):
				conflicts++
			default:
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if ok != 1 || conflicts != 1 {
			t.Fatalf("round %d: %d updates succeeded and %d conflicted; want 1 and 1",
				round, ok, conflicts)
		}
	}
}

func testDeleteAll(t *testing.T, open Opener) {
	var mu sync.Mutex
	deletes := 0
	s := open(t, func(ctx context.Context, tx store.Tx, c store.Change) error {
		if c.Type == store.Deleted {
			mu.Lock()
			deletes++
			mu.Unlock()
		}
		return nil
	})
	createDevices(t, s, "dev-%04d", 0, 620)
	create(t, s, kindCases[1].make("f1", "a"))
	var n int64
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		n, err = tx.DeleteAll(ctx, store.KindDevice)
		return err
	})
	if n != 620 {
		t.Errorf("DeleteAll returned %d; want 620", n)
	}
	if deletes != 620 {
		t.Errorf("hook saw %d deletions; want 620", deletes)
	}
	var res *store.ListResult
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		res, err = tx.List(ctx, store.KindDevice, store.ListOptions{})
		return err
	})
	if len(res.Items) != 0 {
		t.Errorf("%d devices left after DeleteAll", len(res.Items))
	}
	if _, err := get(t, s, store.KindFleet, "f1"); err != nil {
		t.Errorf("DeleteAll of devices removed fleet f1: %v", err)
	}
}

func testSetLastSeen(t *testing.T, open Opener) {
	s := open(t, nil)
	created := create(t, s, device("d1", nil, "img"))
	before := latestVersion(t, s)
	seen := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		return tx.SetLastSeen(ctx, map[string]time.Time{"d1": seen, "unknown": seen})
	})
	got := mustGet(t, s, store.KindDevice, "d1").(*fleetplanev1.Device)
	if got.Metadata.ResourceVersion != store.Meta(created).ResourceVersion {
		t.Errorf("resource_version changed from %s to %s",
			store.Meta(created).ResourceVersion, got.Metadata.ResourceVersion)
	}
	if ls := got.GetStatus().GetLastSeen(); ls == nil || !ls.AsTime().Equal(seen) {
		t.Errorf("status.last_seen = %v; want %v", ls, seen)
	}
	if after := latestVersion(t, s); after != before {
		t.Errorf("latest version moved from %d to %d; SetLastSeen must not log a change",
			before, after)
	}
	_, err := get(t, s, store.KindDevice, "unknown")
	wantErr(t, err, store.ErrNotFound, "Get of a device only seen by SetLastSeen")

	var listed *store.ListResult
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		listed, err = tx.List(ctx, store.KindDevice, store.ListOptions{})
		return err
	})
	if len(listed.Items) != 1 {
		t.Fatalf("List returned %d devices; want 1", len(listed.Items))
	}
	ls := listed.Items[0].(*fleetplanev1.Device).GetStatus().GetLastSeen()
	if ls == nil || !ls.AsTime().Equal(seen) {
		t.Errorf("listed status.last_seen = %v; want %v", ls, seen)
	}
}

func testChangeLogOrder(t *testing.T, open Opener) {
	s := open(t, nil)
	create(t, s, device("a", nil, "img-1"))
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Update(ctx, device("a", nil, "img-2")); err != nil {
			return err
		}
		if _, err := tx.Create(ctx, kindCases[1].make("f1", "x")); err != nil {
			return err
		}
		_, err := tx.Delete(ctx, store.KindDevice, "a")
		return err
	})
	create(t, s, device("b", nil, "img-1"))

	var all, devices []store.Change
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		if all, err = tx.Changes(ctx, "", 0, 100); err != nil {
			return err
		}
		devices, err = tx.Changes(ctx, store.KindDevice, 0, 100)
		return err
	})
	type entry struct {
		Type store.ChangeType
		Kind string
		Name string
	}
	want := []entry{
		{store.Added, store.KindDevice, "a"},
		{store.Modified, store.KindDevice, "a"},
		{store.Added, store.KindFleet, "f1"},
		{store.Deleted, store.KindDevice, "a"},
		{store.Added, store.KindDevice, "b"},
	}
	var got []entry
	for i, c := range all {
		got = append(got, entry{c.Type, c.Kind, c.Name})
		if i > 0 && c.Version <= all[i-1].Version {
			t.Errorf("change %d has version %d, not above %d", i, c.Version, all[i-1].Version)
		}
		if rv := store.Meta(c.Object).ResourceVersion; rv != strconv.FormatInt(c.Version, 10) {
			t.Errorf("change %d: object resource_version %s; want %d", i, rv, c.Version)
		}
		if c.Old != nil {
			t.Errorf("change %d read from the log has Old set", i)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Changes (-want +got):\n%s", diff)
	}
	if len(devices) != 4 {
		t.Errorf("Changes of kind Device returned %d entries; want 4", len(devices))
	}
	if v := latestVersion(t, s); len(all) > 0 && v != all[len(all)-1].Version {
		t.Errorf("LatestVersion = %d; want %d", v, all[len(all)-1].Version)
	}

	var tail []store.Change
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		tail, err = tx.Changes(ctx, "", all[2].Version, 1)
		return err
	})
	if len(tail) != 1 || tail[0].Version != all[3].Version {
		t.Errorf("Changes after %d limit 1 = %v; want version %d", all[2].Version, tail, all[3].Version)
	}
}

func testHookInTransaction(t *testing.T, open Opener) {
	var seen []store.Change
	s := open(t, func(ctx context.Context, tx store.Tx, c store.Change) error {
		seen = append(seen, c)
		// The hook runs inside the writing transaction, so the written object is readable.
		if _, err := tx.Get(ctx, c.Kind, c.Name); err != nil && c.Type != store.Deleted {
			return fmt.Errorf("hook cannot read %s %s: %w", c.Kind, c.Name, err)
		}
		_, err := tx.EnqueueTask(ctx, "TestTask", c.Name, time.Now())
		return err
	})
	create(t, s, device("d1", nil, "img-1"))
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Update(ctx, device("d1", nil, "img-2"))
		return err
	})
	if len(seen) != 2 {
		t.Fatalf("hook ran %d times; want 2", len(seen))
	}
	if seen[0].Old != nil {
		t.Errorf("hook for Added got Old = %v; want nil", seen[0].Old)
	}
	old, ok := seen[1].Old.(*fleetplanev1.Device)
	if !ok || old.GetSpec().GetOs().GetImage() != "img-1" {
		t.Errorf("hook for Modified got Old = %v; want the img-1 device", seen[1].Old)
	}
	if img := seen[1].Object.(*fleetplanev1.Device).GetSpec().GetOs().GetImage(); img != "img-2" {
		t.Errorf("hook for Modified got Object image %q; want img-2", img)
	}
	tasks := listTasks(t, s, store.TaskFilter{Kind: "TestTask"})
	if len(tasks) != 1 || tasks[0].Key != "d1" {
		t.Errorf("tasks enqueued by the hook = %v; want one for d1", tasks)
	}
}

func testHookErrorRollsBack(t *testing.T, open Opener) {
	errReject := fmt.Errorf("rejected by hook")
	s := open(t, func(ctx context.Context, tx store.Tx, c store.Change) error {
		if _, err := tx.EnqueueTask(ctx, "TestTask", c.Name, time.Now()); err != nil {
			return err
		}
		if c.Name == "reject" {
			return errReject
		}
		return nil
	})
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Create(ctx, device("keep", nil, "img")); err != nil {
			return err
		}
		_, err := tx.Create(ctx, device("reject", nil, "img"))
		return err
	})
	wantErr(t, err, errReject, "InTx with a failing hook")

	// A caller that ignores the write's error still gets a rollback.
	err = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, _ = tx.Create(ctx, device("reject", nil, "img"))
		return nil
	})
	wantErr(t, err, errReject, "InTx that ignored the hook error")

	for _, name := range []string{"keep", "reject"} {
		_, err := get(t, s, store.KindDevice, name)
		wantErr(t, err, store.ErrNotFound, "Get "+name+" after rollback")
	}
	if n := len(listTasks(t, s, store.TaskFilter{})); n != 0 {
		t.Errorf("%d tasks survived the rollback; want 0", n)
	}
	if v := latestVersion(t, s); v != 0 {
		t.Errorf("LatestVersion after rollback = %d; want 0", v)
	}
}

func testSubscribe(t *testing.T, open Opener) {
	s := open(t, nil)
	ch, cancel := s.Subscribe()
	defer cancel()
	create(t, s, device("d1", nil, "img"))
	waitSignal(t, ch, "Create")
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.EnqueueTask(ctx, "TestTask", "k", time.Now())
		return err
	})
	waitSignal(t, ch, "EnqueueTask")

	// A failed transaction signals nothing.
	_ = s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Create(ctx, device("d2", nil, "img")); err != nil {
			return err
		}
		return fmt.Errorf("abort")
	})
	select {
	case <-ch:
		t.Errorf("Subscribe signalled after a rolled-back transaction")
	default:
	}
}

func testRollback(t *testing.T, open Opener) {
	s := open(t, nil)
	errAbort := fmt.Errorf("abort")
	err := s.InTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Create(ctx, device("d1", nil, "img")); err != nil {
			return err
		}
		return errAbort
	})
	wantErr(t, err, errAbort, "InTx returning an error")
	_, err = get(t, s, store.KindDevice, "d1")
	wantErr(t, err, store.ErrNotFound, "Get after rollback")
}

func listTasks(t *testing.T, s store.Store, f store.TaskFilter) []store.Task {
	t.Helper()
	var out []store.Task
	inTx(t, s, func(ctx context.Context, tx store.Tx) error {
		var err error
		out, _, err = tx.ListTasks(ctx, f)
		return err
	})
	return out
}
