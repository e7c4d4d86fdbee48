package tasks

import (
	"math/rand/v2"
	"testing"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
)

// outcome is what the tasks derive for every device: owner, the fleets competing for it, and
// the rendered file.
type outcome struct {
	Owner     string
	Contested []string
	Content   string
}

// outcomes returns every device's outcome. The rendered content of a device without an owner
// is whatever it last had, which depends on the order of events, so it is left empty.
func outcomes(t *testing.T, st store.Store) map[string]outcome {
	t.Helper()
	out := make(map[string]outcome)
	for name, owner := range owners(t, st) {
		o := outcome{Owner: owner, Contested: contestingFleets(getDevice(t, st, name))}
		if owner != "" {
			o.Content = fileContent(getRendered(t, st, name), "/etc/app.conf")
		}
		out[name] = o
	}
	return out
}

// orderStep brings one object to a state: an intermediate one or its final one.
type orderStep struct {
	name  string
	apply func(t *testing.T, st store.Store)
}

// orderSteps returns the steps towards one final state: three fleets (two overlapping) and six
// devices, with detours through other labels and selectors. The order of steps on the same
// object is kept; steps on different objects may be shuffled.
func orderSteps() [][]orderStep {
	setDevice := func(name string, labels map[string]string) orderStep {
		return orderStep{"device " + name, func(t *testing.T, st store.Store) {
			update(t, st, store.KindDevice, name, func(d *fleetplanev1.Device) { d.Metadata.Labels = labels })
		}}
	}
	newDevice := func(name string, labels map[string]string) orderStep {
		return orderStep{"create device " + name, func(t *testing.T, st store.Store) { create(t, st, device(name, labels)) }}
	}
	setFleet := func(name string, match map[string]string) orderStep {
		return orderStep{"fleet " + name, func(t *testing.T, st store.Store) {
			update(t, st, store.KindFleet, name, func(f *fleetplanev1.Fleet) { f.Spec.Selector.MatchLabels = match })
		}}
	}
	newFleet := func(name string, match map[string]string) orderStep {
		return orderStep{"create fleet " + name, func(t *testing.T, st store.Store) {
			create(t, st, fleet(name, match, name+":{{ .metadata.name }}"))
		}}
	}
	m := func(kv ...string) map[string]string {
		out := make(map[string]string)
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	return [][]orderStep{
		{newFleet("f1", m("a", "1")), setFleet("f1", m("a", "2")), setFleet("f1", m("a", "1"))},
		{newFleet("f2", m("b", "1"))},
		{newFleet("f3", m("c", "9")), setFleet("f3", m("c", "1"))},
		{newDevice("d1", m("a", "1"))},
		{newDevice("d2", m("b", "1")), setDevice("d2", m("a", "1", "b", "1")), setDevice("d2", m("b", "1"))},
		{newDevice("d3", m("a", "1", "b", "1"))},
		{newDevice("d4", m("c", "1")), setDevice("d4", m("a", "1"))},
		{newDevice("d5", nil), setDevice("d5", m("a", "1", "c", "1"))},
		{newDevice("d6", m("a", "1")), setDevice("d6", m("z", "1"))},
	}
}

// shuffleSteps interleaves the per-object step lists in a random order that keeps each list's
// own order.
func shuffleSteps(rng *rand.Rand, lists [][]orderStep) []orderStep {
	var out []orderStep
	next := make([]int, len(lists))
	for {
		var open []int
		for i, list := range lists {
			if next[i] < len(list) {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			return out
		}
		i := open[rng.IntN(len(open))]
		out = append(out, lists[i][next[i]])
		next[i]++
	}
}

func TestSelectorMatchOrderIndependent(t *testing.T) {
	want := map[string]outcome{
		"d1": {Owner: "Fleet/f1", Content: "f1:d1"},
		"d2": {Owner: "Fleet/f2", Content: "f2:d2"},
		"d3": {Contested: []string{"f1", "f2"}},
		"d4": {Owner: "Fleet/f1", Content: "f1:d4"},
		"d5": {Contested: []string{"f1", "f3"}},
		"d6": {},
	}

	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		steps := shuffleSteps(rng, orderSteps())
		st := openStore(t)
		r := newRunner(Deps{Store: st})
		for _, step := range steps {
			step.apply(t, st)
			if rng.IntN(3) == 0 {
				drain(t, st, r)
			}
		}
		drain(t, st, r)

		if diff := cmp.Diff(want, outcomes(t, st)); diff != "" {
			var names []string
			for _, s := range steps {
				names = append(names, s.name)
			}
			t.Errorf("seed %d, order %v: outcome (-want +got):\n%s", seed, names, diff)
		}
	}
}
