package apply

import (
	"context"
	"errors"
	"fmt"
	"sync"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// Memory applies specs by keeping them in memory, for simulated devices. It keeps the same
// version rules as Manager and is safe for concurrent use.
type Memory struct {
	mu       sync.Mutex
	current  *fleetplanev1.RenderedDeviceSpec
	versions Versions
	// Fail, when set, is called for each spec; a non-nil result rejects the spec.
	Fail func(*fleetplanev1.RenderedDeviceSpec) error
}

// Versions returns the applied and rejected versions.
func (m *Memory) Versions() Versions {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.versions
}

// Current returns the applied spec, or nil when none was applied.
func (m *Memory) Current() *fleetplanev1.RenderedDeviceSpec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current
}

// Recover does nothing: a Memory applier has no interrupted work after a restart.
func (m *Memory) Recover(context.Context) error { return nil }

// Apply records spec as current, or as rejected when Fail returns an error.
func (m *Memory) Apply(_ context.Context, spec *fleetplanev1.RenderedDeviceSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	version := spec.GetRenderedVersion()
	if version == "" {
		return errors.New("rendered_version is empty")
	}
	if !Newer(version, m.versions.Highest()) {
		return fmt.Errorf("apply rendered version %s: %w (highest is %s)",
			version, ErrNotNewer, m.versions.Highest())
	}
	if _, _, err := checkFiles(spec.GetFiles()); err != nil {
		return m.reject(version, err)
	}
	if m.Fail != nil {
		if err := m.Fail(spec); err != nil {
			return m.reject(version, err)
		}
	}
	m.current = spec
	m.versions.Applied = version
	return nil
}

func (m *Memory) reject(version string, cause error) error {
	m.versions.Rejected = version
	m.versions.RejectedError = cause.Error()
	return fmt.Errorf("apply rendered version %s: %w", version, cause)
}
