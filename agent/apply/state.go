package apply

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

// StateFileName is the name of the state file in the data directory.
const StateFileName = "spec-state.json"

// Versions summarises what a device has done with the rendered versions it received.
type Versions struct {
	// Applied is the version of the spec the device runs; empty when it has applied none.
	Applied string
	// Rejected is the highest version that failed to apply, and RejectedError its error.
	Rejected      string
	RejectedError string
}

// Highest returns the highest version applied or rejected, which is what the agent reports
// in its hello and the bound below which it ignores specs.
func (v Versions) Highest() string {
	if Newer(v.Rejected, v.Applied) {
		return v.Rejected
	}
	return v.Applied
}

// LastRejected reports whether the latest spec the device received was rejected.
func (v Versions) LastRejected() bool {
	return v.Rejected != "" && Newer(v.Rejected, v.Applied)
}

// state is the persistent record of a Manager.
type state struct {
	current      *fleetplanev1.RenderedDeviceSpec
	currentFiles []string
	desired      *fleetplanev1.RenderedDeviceSpec
	versions     Versions
}

// stateFile is the JSON form of state. Specs are stored in their protobuf JSON form.
type stateFile struct {
	Current       json.RawMessage `json:"current,omitempty"`
	CurrentFiles  []string        `json:"current_files,omitempty"`
	Desired       json.RawMessage `json:"desired,omitempty"`
	Rejected      string          `json:"rejected_version,omitempty"`
	RejectedError string          `json:"rejected_error,omitempty"`
}

func loadState(path string) (state, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return state{}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("read state: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		return state{}, fmt.Errorf("parse state file %s: %w", path, err)
	}
	s := state{
		currentFiles: f.CurrentFiles,
		versions:     Versions{Rejected: f.Rejected, RejectedError: f.RejectedError},
	}
	if s.current, err = unmarshalSpec(f.Current); err != nil {
		return state{}, fmt.Errorf("parse current spec in %s: %w", path, err)
	}
	if s.desired, err = unmarshalSpec(f.Desired); err != nil {
		return state{}, fmt.Errorf("parse desired spec in %s: %w", path, err)
	}
	s.versions.Applied = s.current.GetRenderedVersion()
	return s, nil
}

func saveState(path string, s state) error {
	f := stateFile{
		CurrentFiles:  s.currentFiles,
		Rejected:      s.versions.Rejected,
		RejectedError: s.versions.RejectedError,
	}
	var err error
	if f.Current, err = marshalSpec(s.current); err != nil {
		return err
	}
	if f.Desired, err = marshalSpec(s.desired); err != nil {
		return err
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

func marshalSpec(spec *fleetplanev1.RenderedDeviceSpec) (json.RawMessage, error) {
	if spec == nil {
		return nil, nil
	}
	data, err := protojson.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec %s: %w", spec.GetRenderedVersion(), err)
	}
	return data, nil
}

func unmarshalSpec(data json.RawMessage) (*fleetplanev1.RenderedDeviceSpec, error) {
	if len(data) == 0 || string(data) == "null" {
		return nil, nil
	}
	spec := &fleetplanev1.RenderedDeviceSpec{}
	if err := protojson.Unmarshal(data, spec); err != nil {
		return nil, err
	}
	return spec, nil
}
