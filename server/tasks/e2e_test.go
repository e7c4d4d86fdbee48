package tasks

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
)

// waitFor checks cond after commits to st, at most every 20ms so that a busy store is not
// slowed by the checks, and at least every 100ms for commits by other processes. It fails the
// test when cond has not returned "" within timeout. cond returns why it is not met yet.
func waitFor(t testing.TB, st store.Store, timeout time.Duration, cond func() string) {
	t.Helper()
	const minGap, maxGap = 20 * time.Millisecond, 100 * time.Millisecond
	notify, cancel := st.Subscribe()
	defer cancel()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		checked := time.Now()
		why := cond()
		if why == "" {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %v: %s", timeout, why)
		case <-notify:
		case <-time.After(maxGap):
		}
		if wait := minGap - time.Since(checked); wait > 0 {
			select {
			case <-deadline.C:
				t.Fatalf("timed out after %v: %s", timeout, why)
			case <-time.After(wait):
			}
		}
	}
}

// queueEmpty returns "" when no task is pending or running, or what is left.
func queueEmpty(ctx context.Context, st store.Store) string {
	var counts map[string]map[store.TaskState]int64
	err := st.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		counts, err = tx.CountTasks(ctx)
		return err
	})
	if err != nil {
		return "count tasks: " + err.Error()
	}
	for kind, byState := range counts {
		if byState[store.TaskPending]+byState[store.TaskRunning] > 0 {
			return fmt.Sprintf("tasks left: %v", counts)
		}
		if byState[store.TaskFailed] > 0 {
			return fmt.Sprintf("%s tasks failed: %v", kind, counts)
		}
	}
	return ""
}

func TestEndToEndRollout(t *testing.T) {
	st := openStore(t)
	n := &notifier{}
	startDispatcher(t, st, Deps{Notify: n.notify})

	create(t, st, fleet("f", map[string]string{"site": "s1"}, "zone={{ .metadata.labels.zone }}"))
	create(t, st, device("d1", map[string]string{"site": "s1", "zone": "a"}))
	create(t, st, device("d2", map[string]string{"site": "s1"}))

	waitFor(t, st, 10*time.Second, func() string {
		if got := fileContent(getRendered(t, st, "d1"), "/etc/app.conf"); got != "zone=a" {
			return fmt.Sprintf("d1 content %q", got)
		}
		c := condition(getDevice(t, st, "d2").GetStatus().GetConditions(), ConditionTemplateApplied)
		if c.GetReason() != reasonMissingLabel {
			return fmt.Sprintf("d2 TemplateApplied %v", c)
		}
		return ""
	})
	if n.count("d1") == 0 {
		t.Error("Notify was not called for d1")
	}

	update(t, st, store.KindDevice, "d1", func(d *fleetplanev1.Device) { d.Metadata.Labels["zone"] = "b" })
	update(t, st, store.KindDevice, "d2", func(d *fleetplanev1.Device) { d.Metadata.Labels["zone"] = "c" })
	waitFor(t, st, 10*time.Second, func() string {
		for name, want := range map[string]string{"d1": "zone=b", "d2": "zone=c"} {
			if got := fileContent(getRendered(t, st, name), "/etc/app.conf"); got != want {
				return fmt.Sprintf("%s content %q, want %q", name, got, want)
			}
		}
		return queueEmpty(context.Background(), st)
	})
}

// churnResult is what runLabelChurn measured.
type churnResult struct {
	updates int
	elapsed time.Duration
	stats   runStats
}

// runLabelChurn creates one fleet selecting env=prod and the given number of devices, makes
// the given number of label updates on random devices, waits until the queue is empty, and
// checks that exactly the devices labelled env=prod are owned by the fleet.
func runLabelChurn(t testing.TB, devices, updates int) churnResult {
	st := openStore(t)
	create(t, st, fleet("prod", map[string]string{"env": "prod"}, "{{ .metadata.name }}"))
	for i := 0; i < devices; i++ {
		create(t, st, device(fmt.Sprintf("d%05d", i), map[string]string{"env": "dev"}))
	}
	final := make(map[string]string)
	for i := 0; i < devices; i++ {
		final[fmt.Sprintf("d%05d", i)] = ""
	}

	start := time.Now()
	stats := startDispatcher(t, st, Deps{})
	rng := rand.New(rand.NewPCG(1, 2))
	const perTx = 10
	for done := 0; done < updates; done += perTx {
		inTx(t, st, func(ctx context.Context, tx store.Tx) error {
			for j := 0; j < perTx && done+j < updates; j++ {
				name := fmt.Sprintf("d%05d", rng.IntN(devices))
				obj, err := tx.Get(ctx, store.KindDevice, name)
				if err != nil {
					return err
				}
				env := []string{"prod", "dev", "test"}[rng.IntN(3)]
				store.Meta(obj).Labels["env"] = env
				if _, err := tx.Update(ctx, obj); err != nil {
					return err
				}
				final[name] = ""
				if env == "prod" {
					final[name] = "Fleet/prod"
				}
			}
			return nil
		})
	}
	waitFor(t, st, 5*time.Minute, func() string { return queueEmpty(context.Background(), st) })
	elapsed := time.Since(start)

	if diff := cmp.Diff(final, owners(t, st)); diff != "" {
		t.Errorf("owners after churn (-want +got):\n%s", diff)
	}
	return churnResult{updates: updates, elapsed: elapsed, stats: stats()}
}

func TestLabelChurn(t *testing.T) {
	res := runLabelChurn(t, 50, 500)
	if res.stats.TasksRun == 0 {
		t.Error("dispatcher ran no tasks")
	}
}

// BenchmarkLabelChurn makes ten thousand label updates on 1000 devices of one fleet and waits
// until the tasks settle. It reports tasks run per second and the triggers absorbed by a
// pending task of the same key.
func BenchmarkLabelChurn(b *testing.B) {
	for i := 0; i < b.N; i++ {
		res := runLabelChurn(b, 1000, 10000)
		b.ReportMetric(float64(res.stats.TasksRun)/res.elapsed.Seconds(), "tasks/s")
		b.ReportMetric(float64(res.updates)/res.elapsed.Seconds(), "updates/s")
		b.ReportMetric(float64(res.stats.Coalesced), "coalesced")
		b.ReportMetric(float64(res.stats.Triggers), "triggers")
	}
}

func TestDeletedTemplateVersionIsRecreated(t *testing.T) {
	st := openStore(t)
	startDispatcher(t, st, Deps{})
	create(t, st, fleet("f", map[string]string{"site": "s1"}, "one"))
	create(t, st, device("d1", map[string]string{"site": "s1"}))
	waitFor(t, st, 10*time.Second, func() string {
		return fmt.Sprintf("%s%s", contentOf(t, st, "d1", "one"), queueEmpty(context.Background(), st))
	})

	// An operator deletes the version the fleet runs: validation makes it again and the
	// device keeps the fleet's template.
	remove(t, st, store.KindTemplateVersion, "f-1")
	waitFor(t, st, 10*time.Second, func() string {
		if _, err := getTemplateVersion(st, "f-1"); err != nil {
			return "template version f-1: " + err.Error()
		}
		return queueEmpty(context.Background(), st)
	})
	if got := getDevice(t, st, "d1").GetMetadata().GetAnnotations()[TemplateVersionAnnotation]; got != "f-1" {
		t.Errorf("d1 template version = %q; want f-1", got)
	}
	if msg := contentOf(t, st, "d1", "one"); msg != "" {
		t.Error(msg)
	}
}

func TestRecreatedFleetRendersItsOwnTemplate(t *testing.T) {
	st := openStore(t)
	startDispatcher(t, st, Deps{})
	create(t, st, fleet("f", map[string]string{"site": "s1"}, "old"))
	create(t, st, device("d1", map[string]string{"site": "s1"}))
	waitFor(t, st, 10*time.Second, func() string { return contentOf(t, st, "d1", "old") })

	// The fleet API deletes a fleet's template versions together with the fleet.
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Delete(ctx, store.KindFleet, "f"); err != nil {
			return err
		}
		_, err := tx.Delete(ctx, store.KindTemplateVersion, "f-1")
		return err
	})
	create(t, st, fleet("f", map[string]string{"site": "s1"}, "new"))
	waitFor(t, st, 10*time.Second, func() string {
		return fmt.Sprintf("%s%s", contentOf(t, st, "d1", "new"), queueEmpty(context.Background(), st))
	})
}

// contentOf returns "" when the device's rendered /etc/app.conf is want, and a description of
// the difference otherwise.
func contentOf(t testing.TB, st store.Store, device, want string) string {
	if got := fileContent(getRendered(t, st, device), "/etc/app.conf"); got != want {
		return fmt.Sprintf("%s content %q, want %q; ", device, got, want)
	}
	return ""
}

func getTemplateVersion(st store.Store, name string) (store.Object, error) {
	var obj store.Object
	err := st.InTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		var err error
		obj, err = tx.Get(ctx, store.KindTemplateVersion, name)
		return err
	})
	return obj, err
}
