package tasks

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/fleetplane/fleetplane/store/sqlite"
)

const testShards = 4

// openStore opens a SQLite store in a temporary directory with Hook as its change hook.
func openStore(t testing.TB) *sqlite.Store {
	t.Helper()
	return openStoreAt(t, filepath.Join(t.TempDir(), "fleetplane.db"))
}

func openStoreAt(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path, sqlite.Options{ChangeHook: Hook, ShardCount: testShards})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func allShards() []int {
	shards := make([]int, testShards)
	for i := range shards {
		shards[i] = i
	}
	return shards
}

// notifier records the devices passed to Notify.
type notifier struct {
	mu      sync.Mutex
	devices []string
}

func (n *notifier) notify(device string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.devices = append(n.devices, device)
}

func (n *notifier) count(device string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, d := range n.devices {
		if d == device {
			c++
		}
	}
	return c
}

// drain runs every pending task with r's handlers, in claim order, until none is left. Tests
// use it in place of the dispatcher when they need one deterministic run.
func drain(t testing.TB, st store.Store, r *runner) int {
	t.Helper()
	ctx := context.Background()
	handlers := r.handlers()
	ran := 0
	for {
		var claimed []store.Task
		err := st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
			var err error
			claimed, err = tx.ClaimTasks(ctx, allShards(), time.Now().Add(time.Hour), 100)
			return err
		})
		if err != nil {
			t.Fatalf("claim tasks: %v", err)
		}
		if len(claimed) == 0 {
			return ran
		}
		for _, task := range claimed {
			if err := handlers[task.Kind](ctx, task.Key); err != nil {
				t.Fatalf("task %s %s: %v", task.Kind, task.Key, err)
			}
			err := st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
				return tx.FinishTask(ctx, task.Kind, task.Key)
			})
			if err != nil {
				t.Fatalf("finish task %s %s: %v", task.Kind, task.Key, err)
			}
			ran++
		}
	}
}

func inTx(t testing.TB, st store.Store, fn func(ctx context.Context, tx store.Tx) error) {
	t.Helper()
	if err := st.InTx(context.Background(), fn); err != nil {
		t.Fatalf("transaction: %v", err)
	}
}

func create(t testing.TB, st store.Store, obj store.Object) {
	t.Helper()
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Create(ctx, obj)
		return err
	})
}

// update reads the named object, lets change modify it and writes it back with Update.
func update[T store.Object](t testing.TB, st store.Store, kind, name string, change func(T)) {
	t.Helper()
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		obj, err := tx.Get(ctx, kind, name)
		if err != nil {
			return err
		}
		change(obj.(T))
		_, err = tx.Update(ctx, obj)
		return err
	})
}

func remove(t testing.TB, st store.Store, kind, name string) {
	t.Helper()
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.Delete(ctx, kind, name)
		return err
	})
}

// device returns a device with labels and a base OS image.
//
// NOTE: the image keeps the spec non-empty, because the SQLite store cannot yet update an
// object whose stored spec is empty (it reads the empty blob back as NULL).
func device(name string, labels map[string]string) *fleetplanev1.Device {
	return &fleetplanev1.Device{
		Metadata: &fleetplanev1.ObjectMeta{Name: name, Labels: labels},
		Spec:     &fleetplanev1.DeviceSpec{Os: &fleetplanev1.DeviceOsSpec{Image: "base"}},
	}
}

// fleet returns a fleet selecting matchLabels whose template writes content to /etc/app.conf.
func fleet(name string, matchLabels map[string]string, content string) *fleetplanev1.Fleet {
	return &fleetplanev1.Fleet{
		Metadata: &fleetplanev1.ObjectMeta{Name: name},
		Spec: &fleetplanev1.FleetSpec{
			Selector: &fleetplanev1.LabelSelector{MatchLabels: matchLabels},
			Template: &fleetplanev1.DeviceTemplate{Spec: inlineSpec(content)},
		},
	}
}

func getDevice(t testing.TB, st store.Store, name string) *fleetplanev1.Device {
	t.Helper()
	var d *fleetplanev1.Device
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		obj, err := tx.Get(ctx, store.KindDevice, name)
		if err != nil {
			return err
		}
		d = obj.(*fleetplanev1.Device)
		return nil
	})
	return d
}

func getFleet(t testing.TB, st store.Store, name string) *fleetplanev1.Fleet {
	t.Helper()
	var f *fleetplanev1.Fleet
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		obj, err := tx.Get(ctx, store.KindFleet, name)
		if err != nil {
			return err
		}
		f = obj.(*fleetplanev1.Fleet)
		return nil
	})
	return f
}

// getRendered returns the device's rendered spec, or nil when it has none.
func getRendered(t testing.TB, st store.Store, name string) *fleetplanev1.RenderedDeviceSpec {
	t.Helper()
	var r *fleetplanev1.RenderedDeviceSpec
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		var err error
		r, err = tx.GetRendered(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			r, err = nil, nil
		}
		return err
	})
	return r
}

// owners returns every device's owner by device name.
func owners(t testing.TB, st store.Store) map[string]string {
	t.Helper()
	out := make(map[string]string)
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		return listDevices(ctx, tx, store.ListOptions{}, func(d *fleetplanev1.Device) error {
			out[d.GetMetadata().GetName()] = d.GetMetadata().GetOwner()
			return nil
		})
	})
	return out
}

// pendingTasks returns the tasks in the queue as "KIND KEY", sorted.
func pendingTasks(t testing.TB, st store.Store) []string {
	t.Helper()
	var out []string
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		filter := store.TaskFilter{}
		for {
			tasks, next, err := tx.ListTasks(ctx, filter)
			if err != nil {
				return err
			}
			for _, task := range tasks {
				out = append(out, fmt.Sprintf("%s %s", task.Kind, task.Key))
			}
			if next == "" {
				return nil
			}
			filter.PageToken = next
		}
	})
	sort.Strings(out)
	return out
}

// clearTasks empties the task queue without running the tasks, so that a test can list only
// the tasks its next step triggers.
func clearTasks(t testing.TB, st store.Store) {
	t.Helper()
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		tasks, err := tx.ClaimTasks(ctx, allShards(), time.Now().Add(time.Hour), 100000)
		if err != nil {
			return err
		}
		for _, task := range tasks {
			if err := tx.FinishTask(ctx, task.Kind, task.Key); err != nil {
				return err
			}
		}
		return nil
	})
}

func condition(conditions []*fleetplanev1.Condition, conditionType string) *fleetplanev1.Condition {
	return findCondition(conditions, conditionType)
}

// fileContent returns the content of the rendered file at path, or "" when there is none.
func fileContent(r *fleetplanev1.RenderedDeviceSpec, path string) string {
	for _, f := range r.GetFiles() {
		if f.GetPath() == path {
			return string(f.GetContent())
		}
	}
	return ""
}
