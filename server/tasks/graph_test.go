package tasks

import (
	"context"
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
)

func gitSpec(repository string) *fleetplanev1.DeviceSpec {
	return &fleetplanev1.DeviceSpec{Config: []*fleetplanev1.ConfigProviderSpec{{
		Name:   "from-git",
		GitRef: &fleetplanev1.GitConfigProviderSpec{Repository: repository, Path: "/conf"},
	}}}
}

func repository(name string) *fleetplanev1.Repository {
	return &fleetplanev1.Repository{
		Metadata: &fleetplanev1.ObjectMeta{Name: name},
		Spec:     &fleetplanev1.RepositorySpec{Url: "https://git.example.invalid/" + name, Type: "git"},
	}
}

// TestHookEdges makes each store update through a real store and checks the tasks it enqueues.
func TestHookEdges(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(t *testing.T, st store.Store)
		action func(t *testing.T, st store.Store)
		want   []string
	}{{
		name:   "fleet created",
		action: func(t *testing.T, st store.Store) { create(t, st, fleet("f", map[string]string{"a": "1"}, "x")) },
		want:   []string{"FleetSelectorMatch Fleet/f", "FleetValidate Fleet/f"},
	}, {
		name:  "fleet template updated",
		setup: func(t *testing.T, st store.Store) { create(t, st, fleet("f", map[string]string{"a": "1"}, "x")) },
		action: func(t *testing.T, st store.Store) {
			update(t, st, store.KindFleet, "f", func(f *fleetplanev1.Fleet) { f.Spec.Template.Spec = inlineSpec("y") })
		},
		want: []string{"FleetValidate Fleet/f"},
	}, {
		name:  "fleet selector updated",
		setup: func(t *testing.T, st store.Store) { create(t, st, fleet("f", map[string]string{"a": "1"}, "x")) },
		action: func(t *testing.T, st store.Store) {
			update(t, st, store.KindFleet, "f", func(f *fleetplanev1.Fleet) { f.Spec.Selector.MatchLabels["b"] = "2" })
		},
		want: []string{"FleetSelectorMatch Fleet/f"},
	}, {
		name:  "fleet labels updated",
		setup: func(t *testing.T, st store.Store) { create(t, st, fleet("f", map[string]string{"a": "1"}, "x")) },
		action: func(t *testing.T, st store.Store) {
			update(t, st, store.KindFleet, "f", func(f *fleetplanev1.Fleet) { f.Metadata.Labels = map[string]string{"l": "v"} })
		},
		want: nil,
	}, {
		name:   "fleet deleted",
		setup:  func(t *testing.T, st store.Store) { create(t, st, fleet("f", map[string]string{"a": "1"}, "x")) },
		action: func(t *testing.T, st store.Store) { remove(t, st, store.KindFleet, "f") },
		want:   []string{"FleetSelectorMatch Fleet/f"},
	}, {
		name: "all fleets deleted",
		setup: func(t *testing.T, st store.Store) {
			create(t, st, fleet("f1", map[string]string{"a": "1"}, "x"))
			create(t, st, fleet("f2", map[string]string{"a": "2"}, "x"))
		},
		action: func(t *testing.T, st store.Store) { deleteAll(t, st, store.KindFleet) },
		want:   []string{"FleetSelectorMatch Fleet/f1", "FleetSelectorMatch Fleet/f2"},
	}, {
		name:   "device created",
		action: func(t *testing.T, st store.Store) { create(t, st, device("d", map[string]string{"a": "1"})) },
		want:   []string{"DeviceRender Device/d", "FleetSelectorMatch Device/d"},
	}, {
		name:  "device labels updated",
		setup: func(t *testing.T, st store.Store) { create(t, st, device("d", map[string]string{"a": "1"})) },
		action: func(t *testing.T, st store.Store) {
			update(t, st, store.KindDevice, "d", func(d *fleetplanev1.Device) { d.Metadata.Labels["a"] = "2" })
		},
		want: []string{"FleetRollout Device/d", "FleetSelectorMatch Device/d"},
	}, {
		name:  "device owner updated",
		setup: func(t *testing.T, st store.Store) { create(t, st, device("d", nil)) },
		action: func(t *testing.T, st store.Store) {
			update(t, st, store.KindDevice, "d", func(d *fleetplanev1.Device) { d.Metadata.Owner = "Fleet/f" })
		},
		want: []string{"FleetRollout Device/d"},
	}, {
		name:  "device spec updated",
		setup: func(t *testing.T, st store.Store) { create(t, st, device("d", nil)) },
		action: func(t *testing.T, st store.Store) {
			update(t, st, store.KindDevice, "d", func(d *fleetplanev1.Device) { d.Spec = inlineSpec("new") })
		},
		want: []string{"DeviceRender Device/d"},
	}, {
		name:  "device status updated",
		setup: func(t *testing.T, st store.Store) { create(t, st, device("d", nil)) },
		action: func(t *testing.T, st store.Store) {
			inTx(t, st, func(ctx context.Context, tx store.Tx) error {
				obj, err := tx.Get(ctx, store.KindDevice, "d")
				if err != nil {
					return err
				}
				d := obj.(*fleetplanev1.Device)
				d.Status = &fleetplanev1.DeviceStatus{Summary: &fleetplanev1.DeviceSummaryStatus{Status: "Online"}}
				_, err = tx.UpdateStatus(ctx, d)
				return err
			})
		},
		want: nil,
	}, {
		name: "all devices deleted",
		setup: func(t *testing.T, st store.Store) {
			create(t, st, device("d1", nil))
			create(t, st, device("d2", nil))
		},
		action: func(t *testing.T, st store.Store) { deleteAll(t, st, store.KindDevice) },
		want: []string{
			"DeviceRender Device/d1", "DeviceRender Device/d2",
			"FleetSelectorMatch Device/d1", "FleetSelectorMatch Device/d2",
		},
	}, {
		name: "template version created",
		action: func(t *testing.T, st store.Store) {
			create(t, st, &fleetplanev1.TemplateVersion{
				Metadata: &fleetplanev1.ObjectMeta{Name: "f-1", Owner: "Fleet/f"},
				Spec:     &fleetplanev1.TemplateVersionSpec{Fleet: "f"},
			})
		},
		want: []string{"FleetRollout Fleet/f"},
	}, {
		name:   "repository created",
		action: func(t *testing.T, st store.Store) { create(t, st, repository("r")) },
		want:   []string{"RepositoryUpdates Repository/r"},
	}, {
		name:  "repository modified",
		setup: func(t *testing.T, st store.Store) { create(t, st, repository("r")) },
		action: func(t *testing.T, st store.Store) {
			update(t, st, store.KindRepository, "r", func(r *fleetplanev1.Repository) { r.Spec.Url += "-moved" })
		},
		want: []string{"RepositoryUpdates Repository/r"},
	}, {
		name:   "repository deleted",
		setup:  func(t *testing.T, st store.Store) { create(t, st, repository("r")) },
		action: func(t *testing.T, st store.Store) { remove(t, st, store.KindRepository, "r") },
		want:   []string{"RepositoryUpdates Repository/r"},
	}, {
		name: "all repositories deleted",
		setup: func(t *testing.T, st store.Store) {
			create(t, st, repository("r1"))
			create(t, st, repository("r2"))
		},
		action: func(t *testing.T, st store.Store) { deleteAll(t, st, store.KindRepository) },
		want:   []string{"RepositoryUpdates Repository/r1", "RepositoryUpdates Repository/r2"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t)
			if tc.setup != nil {
				tc.setup(t, st)
			}
			clearTasks(t, st)

			tc.action(t, st)

			if diff := cmp.Diff(tc.want, pendingTasks(t, st)); diff != "" {
				t.Errorf("tasks (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHookConfigSourceUpdated follows the config-source edges: a repository update triggers
// RepositoryUpdates, which triggers FleetValidate and DeviceRender for what references it.
func TestHookConfigSourceUpdated(t *testing.T) {
	st := openStore(t)
	r := newRunner(Deps{Store: st})
	create(t, st, repository("r"))
	f := fleet("f", map[string]string{"a": "1"}, "")
	f.Spec.Template.Spec = gitSpec("r")
	create(t, st, f)
	create(t, st, fleet("other", map[string]string{"a": "2"}, "x"))
	d := device("d", nil)
	d.Spec = gitSpec("r")
	create(t, st, d)
	create(t, st, device("plain", nil))
	clearTasks(t, st)

	update(t, st, store.KindRepository, "r", func(r *fleetplanev1.Repository) { r.Spec.Url += "-moved" })
	if err := r.repositoryUpdates(context.Background(), "Repository/r"); err != nil {
		t.Fatalf("RepositoryUpdates: %v", err)
	}

	want := []string{"DeviceRender Device/d", "FleetValidate Fleet/f", "RepositoryUpdates Repository/r"}
	if diff := cmp.Diff(want, pendingTasks(t, st)); diff != "" {
		t.Errorf("tasks (-want +got):\n%s", diff)
	}
}

func TestTriggersInvalidKind(t *testing.T) {
	got := Triggers(store.Change{Type: store.Added, Kind: store.KindEvent, Name: "e"})
	if len(got) != 0 {
		t.Errorf("Triggers(event) = %v, want none", got)
	}
}

func deleteAll(t *testing.T, st store.Store, kind string) {
	t.Helper()
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.DeleteAll(ctx, kind)
		return err
	})
}
