package tasks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"github.com/google/go-cmp/cmp"
)

// crashChildEnv names the SQLite file that a re-executed test binary works on in child mode.
const crashChildEnv = "FLEETPLANE_TASKS_CRASH_CHILD"

// Burst parameters of the crash test.
const (
	crashDevices = 40
	crashSteps   = 300
)

// progressName is the ResourceSync whose "step" annotation records, in the same transaction
// as each burst step, how many steps are done. Nothing in the task graph reacts to it.
const progressName = "burst-progress"

// burstStep applies step i of the burst: a deterministic relabel of one device, and every
// 50th step a fleet selector change. Steps set states rather than deltas.
func burstStep(ctx context.Context, tx store.Tx, i int) error {
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	if i%50 == 49 {
		name := fmt.Sprintf("f%d", rng.IntN(3))
		obj, err := tx.Get(ctx, store.KindFleet, name)
		if err != nil {
			return err
		}
		f := obj.(*fleetplanev1.Fleet)
		f.Spec.Selector.MatchLabels = map[string]string{"zone": fmt.Sprintf("z%d", rng.IntN(4))}
		_, err = tx.Update(ctx, f)
		return err
	}
	obj, err := tx.Get(ctx, store.KindDevice, fmt.Sprintf("d%03d", rng.IntN(crashDevices)))
	if err != nil {
		return err
	}
	labels := store.Meta(obj).Labels
	labels["zone"] = fmt.Sprintf("z%d", rng.IntN(4))
	labels["rack"] = fmt.Sprintf("r%d", rng.IntN(3))
	_, err = tx.Update(ctx, obj)
	return err
}

// crashSetup creates the fleets, devices and progress marker of a new burst.
func crashSetup(ctx context.Context, tx store.Tx) error {
	for i := 0; i < 3; i++ {
		f := fleet(fmt.Sprintf("f%d", i), map[string]string{"zone": fmt.Sprintf("z%d", i)},
			fmt.Sprintf("fleet=f%d rack={{ getOrDefault .metadata.labels \"rack\" \"none\" }}", i))
		if _, err := tx.Create(ctx, f); err != nil {
			return err
		}
	}
	for i := 0; i < crashDevices; i++ {
		if _, err := tx.Create(ctx, device(fmt.Sprintf("d%03d", i), map[string]string{"zone": "z0"})); err != nil {
			return err
		}
	}
	_, err := tx.Create(ctx, &fleetplanev1.ResourceSync{
		Metadata: &fleetplanev1.ObjectMeta{Name: progressName, Annotations: map[string]string{"step": "0"}},
		Spec:     &fleetplanev1.ResourceSyncSpec{Repository: "none"},
	})
	return err
}

// runCrashChild is the child mode: it runs the dispatcher with the tasks, applies the burst
// steps that are not done yet (one transaction each, printing "step N"), waits until the queue
// is empty and prints "settled".
func runCrashChild(t *testing.T, path string) {
	ctx := context.Background()
	st := openStoreAt(t, path)
	startDispatcher(t, st, Deps{})

	done := 0
	inTx(t, st, func(ctx context.Context, tx store.Tx) error {
		obj, err := tx.Get(ctx, store.KindResourceSync, progressName)
		if errors.Is(err, store.ErrNotFound) {
			return crashSetup(ctx, tx)
		}
		if err != nil {
			return err
		}
		done, err = strconv.Atoi(store.Meta(obj).Annotations["step"])
		return err
	})
	fmt.Printf("resume %d\n", done)
	for i := done; i < crashSteps; i++ {
		inTx(t, st, func(ctx context.Context, tx store.Tx) error {
			if err := burstStep(ctx, tx, i); err != nil {
				return err
			}
			obj, err := tx.Get(ctx, store.KindResourceSync, progressName)
			if err != nil {
				return err
			}
			store.Meta(obj).Annotations["step"] = strconv.Itoa(i + 1)
			_, err = tx.Update(ctx, obj)
			return err
		})
		fmt.Printf("step %d\n", i+1)
	}
	waitFor(t, st, 2*time.Minute, func() string { return queueEmpty(ctx, st) })
	fmt.Println("settled")
}

// startChild re-executes the test binary in child mode on path.
func startChild(t *testing.T, path string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashRecovery$", "-test.v")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("child stdout: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	return cmd, bufio.NewScanner(out)
}

// runChildToEnd starts a child and waits until it prints "settled" and exits. It returns the
// step the child resumed at. The child's other output is shown when it fails.
func runChildToEnd(t *testing.T, path string) int {
	t.Helper()
	cmd, lines := startChild(t, path)
	settled := false
	resumed := -1
	var output []string
	for lines.Scan() {
		line := lines.Text()
		if n, ok := strings.CutPrefix(line, "resume "); ok {
			resumed, _ = strconv.Atoi(n)
		}
		switch {
		case line == "settled":
			settled = true
		case !strings.HasPrefix(line, "step "):
			output = append(output, line)
		}
	}
	err := cmd.Wait()
	if err != nil || !settled {
		t.Fatalf("child on %s: exit %v, settled %v, output:\n%s",
			filepath.Base(path), err, settled, strings.Join(output, "\n"))
	}
	return resumed
}

// queueAfterKill returns the tasks left in the file at path, as queueEmpty describes them.
func queueAfterKill(t *testing.T, path string) string {
	t.Helper()
	st := openStoreAt(t, path)
	defer st.Close()
	return queueEmpty(context.Background(), st)
}

// crashOutcome reads the owners and rendered files of every device in the file at path.
func crashOutcome(t *testing.T, path string) map[string]outcome {
	t.Helper()
	st := openStoreAt(t, path)
	out := outcomes(t, st)
	if err := st.Close(); err != nil {
		t.Fatalf("close %s: %v", path, err)
	}
	return out
}

// TestCrashRecovery kills a server process with SIGKILL in the middle of a burst of updates and
// restarts it on the same SQLite file. The store must converge to the same owners and rendered
// specs as a run without the kill.
func TestCrashRecovery(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		runCrashChild(t, path)
		return
	}
	if testing.Short() {
		t.Skip("starts three server processes")
	}
	dir := t.TempDir()
	reference := filepath.Join(dir, "reference.db")
	crashed := filepath.Join(dir, "crashed.db")

	runChildToEnd(t, reference)

	cmd, lines := startChild(t, crashed)
	killAt := crashSteps / 2
	for lines.Scan() {
		if n, ok := strings.CutPrefix(lines.Text(), "step "); ok && n == strconv.Itoa(killAt) {
			break
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Success() {
		t.Fatalf("child after SIGKILL: %v, want it killed", err)
	}
	if left := queueAfterKill(t, crashed); left == "" {
		t.Error("the killed child left no task in the queue, so the restart tests nothing")
	}
	resumed := runChildToEnd(t, crashed)
	if resumed < killAt || resumed >= crashSteps {
		t.Errorf("restart resumed at step %d, want the kill in the middle of the burst (%d..%d)",
			resumed, killAt, crashSteps-1)
	}

	want, got := crashOutcome(t, reference), crashOutcome(t, crashed)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcome after crash (-reference +crashed):\n%s", diff)
	}
}
