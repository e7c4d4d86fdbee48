package apply

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// ErrNotNewer is returned by Apply for a spec whose version is not greater than the highest
// version already applied or rejected.
var ErrNotNewer = errors.New("rendered version is not newer than the device's")

// Manager applies rendered specs to files under a root directory and keeps its state in a
// data directory. See the package documentation for the guarantees.
type Manager struct {
	root      string
	statePath string
	log       *slog.Logger

	// mu guards state; Apply and Recover hold it for the whole apply.
	mu    sync.Mutex
	state state
}

// Open loads the state kept in dataDir and returns a Manager that writes files under root.
// Call Recover before applying anything.
func Open(dataDir, root string, log *slog.Logger) (*Manager, error) {
	if root == "" {
		return nil, errors.New("root directory is empty: set the directory the agent writes files under")
	}
	absRoot, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("root directory %q: %w", root, err)
	}
	// A new device's root may not exist yet; files are written under it from the first spec on.
	if err := os.MkdirAll(absRoot, 0o755); err != nil {
		return nil, fmt.Errorf("create root directory: %w", err)
	}
	statePath := filepath.Join(dataDir, StateFileName)
	s, err := loadState(statePath)
	if err != nil {
		return nil, err
	}
	return &Manager{root: absRoot, statePath: statePath, log: log, state: s}, nil
}

// Versions returns the applied and rejected versions.
func (m *Manager) Versions() Versions {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.versions
}

// Current returns the applied spec, or nil when none was applied.
func (m *Manager) Current() *fleetplanev1.RenderedDeviceSpec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.current
}

// Apply applies spec, or rolls back every change and records the version as rejected. It
// returns ErrNotNewer, without touching anything, when the spec is not newer than the highest
// version applied or rejected.
func (m *Manager) Apply(ctx context.Context, spec *fleetplanev1.RenderedDeviceSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	version := spec.GetRenderedVersion()
	if version == "" {
		return errors.New("rendered_version is empty")
	}
	if !Newer(version, m.state.versions.Highest()) {
		return fmt.Errorf("apply rendered version %s: %w (highest is %s)",
			version, ErrNotNewer, m.state.versions.Highest())
	}
	m.state.desired = spec
	if err := saveState(m.statePath, m.state); err != nil {
		m.state.desired = nil
		return fmt.Errorf("apply rendered version %s: %w", version, err)
	}

	files, err := m.applyFiles(ctx, spec, m.state.currentFiles)
	if err != nil {
		return m.reject(version, err)
	}
	return m.commit(spec, files)
}

// Recover finishes an apply that an earlier process did not complete. If the state file holds
// a desired spec newer than the current one, Recover applies it again. If that fails, it
// writes the current spec's files again and records the desired version as rejected.
func (m *Manager) Recover(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	desired := m.state.desired
	if desired == nil {
		return nil
	}
	version := desired.GetRenderedVersion()
	if !Newer(version, m.state.versions.Highest()) {
		m.state.desired = nil
		return saveState(m.statePath, m.state)
	}
	m.log.InfoContext(ctx, "resuming interrupted apply", "rendered_version", version,
		"current_version", m.state.versions.Applied)
	files, err := m.applyFiles(ctx, desired, m.state.currentFiles)
	if err == nil {
		return m.commit(desired, files)
	}
	m.log.WarnContext(ctx, "interrupted apply failed again; restoring current spec",
		"rendered_version", version, "err", err)
	// NOTE: a file that only the desired spec names keeps what the interrupted apply left,
	// because its earlier content was only held in memory by the process that died.
	if m.state.current != nil {
		if _, restoreErr := m.applyFiles(ctx, m.state.current, nil); restoreErr != nil {
			err = errors.Join(err, fmt.Errorf("restore rendered version %s: %w",
				m.state.versions.Applied, restoreErr))
		}
	}
	return m.recordRejection(version, err)
}

// reject records version as rejected with cause and returns the error for the caller.
func (m *Manager) reject(version string, cause error) error {
	err := fmt.Errorf("apply rendered version %s: %w", version, cause)
	if saveErr := m.recordRejection(version, cause); saveErr != nil {
		return errors.Join(err, saveErr)
	}
	return err
}

// recordRejection stores version as the highest rejected one and saves the state.
func (m *Manager) recordRejection(version string, cause error) error {
	m.state.desired = nil
	m.state.versions.Rejected = version
	m.state.versions.RejectedError = cause.Error()
	return saveState(m.statePath, m.state)
}

// commit records spec as the current spec, written files included.
func (m *Manager) commit(spec *fleetplanev1.RenderedDeviceSpec, files []string) error {
	m.state.current = spec
	m.state.currentFiles = files
	m.state.desired = nil
	m.state.versions.Applied = spec.GetRenderedVersion()
	if err := saveState(m.statePath, m.state); err != nil {
		return fmt.Errorf("apply rendered version %s: %w", spec.GetRenderedVersion(), err)
	}
	return nil
}

// applyFiles writes the files of spec and removes those in previous that spec no longer
// names, all or nothing. It returns the clean paths that spec wrote, sorted.
func (m *Manager) applyFiles(
	ctx context.Context,
	spec *fleetplanev1.RenderedDeviceSpec,
	previous []string,
) ([]string, error) {
	paths, modes, err := checkFiles(spec.GetFiles())
	if err != nil {
		return nil, err
	}
	m.recordWorkloads(ctx, spec)

	tx, err := newTransaction(m.root, m.log)
	if err != nil {
		return nil, err
	}
	for i, f := range spec.GetFiles() {
		if err := tx.write(paths[i], f.GetContent(), modes[i], f.GetUser(), f.GetGroup()); err != nil {
			return nil, rollback(tx, err)
		}
	}
	for _, old := range previous {
		if slices.Contains(paths, old) {
			continue
		}
		if err := tx.remove(old); err != nil {
			return nil, rollback(tx, err)
		}
	}
	if err := tx.commit(); err != nil {
		return nil, rollback(tx, err)
	}
	written := slices.Clone(paths)
	slices.Sort(written)
	return written, nil
}

func rollback(tx *transaction, cause error) error {
	if err := tx.rollback(); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// checkFiles validates every file of a spec before anything is written, and returns the clean
// paths and modes in the same order.
func checkFiles(files []*fleetplanev1.RenderedFile) ([]string, []fs.FileMode, error) {
	paths := make([]string, len(files))
	modes := make([]fs.FileMode, len(files))
	seen := make(map[string]int, len(files))
	for i, f := range files {
		clean, err := CleanPath(f.GetPath())
		if err != nil {
			return nil, nil, fmt.Errorf("files[%d]: %w", i, err)
		}
		if j, dup := seen[clean]; dup {
			return nil, nil, fmt.Errorf("files[%d]: path %s is also files[%d]: give each file once", i, clean, j)
		}
		seen[clean] = i
		mode, err := fileMode(f.GetMode())
		if err != nil {
			return nil, nil, fmt.Errorf("files[%d] %s: %w", i, clean, err)
		}
		paths[i], modes[i] = clean, mode
	}
	return paths, modes, nil
}

// recordWorkloads logs the parts of a spec that this agent does not act on yet.
func (m *Manager) recordWorkloads(ctx context.Context, spec *fleetplanev1.RenderedDeviceSpec) {
	// TODO: switch the OS image, run applications, watch systemd units and evaluate resource
	// monitors. Until the agent has a container runtime and an OS updater, it only logs them.
	if spec.GetOs().GetImage() == "" && len(spec.GetApplications()) == 0 &&
		len(spec.GetSystemd().GetMatchPatterns()) == 0 && len(spec.GetResources()) == 0 {
		return
	}
	m.log.DebugContext(ctx, "spec parts recorded but not acted on",
		"rendered_version", spec.GetRenderedVersion(),
		"os_image", spec.GetOs().GetImage(),
		"applications", len(spec.GetApplications()),
		"systemd_patterns", len(spec.GetSystemd().GetMatchPatterns()),
		"resource_monitors", len(spec.GetResources()))
}
