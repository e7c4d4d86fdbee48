package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/fleetplane/fleetplane/store"
	"google.golang.org/protobuf/proto"
)

// Reasons of the device's SpecValid condition and of its events.
const (
	reasonSpecRendered      = "Rendered"
	reasonInvalidSpec       = "InvalidSpec"
	reasonUnsupportedSource = "UnsupportedConfigSource"
	reasonSpecRejected      = "SpecRejected"
)

// defaultFileMode is the mode of an inline file whose mode is zero.
const defaultFileMode = 0o644

// specError is a device spec problem that the operator must fix; it becomes the SpecValid
// condition instead of a task failure.
type specError struct {
	reason  string
	message string
}

func (e *specError) Error() string { return e.message }

// deviceRender runs DeviceRender for key Device/NAME and calls Notify after a commit that
// stored a new rendered version.
func (r *runner) deviceRender(ctx context.Context, key string) error {
	name, err := nameOf(key, store.KindDevice)
	if err != nil {
		return permanent(err)
	}
	var changed bool
	var version int64
	err = r.deps.Store.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		version, changed, err = r.renderDevice(ctx, tx, name)
		return err
	})
	if err != nil {
		return err
	}
	if changed {
		r.log.DebugContext(ctx, "device spec rendered", slog.String("device", name),
			slog.Int64("rendered_version", version))
		if r.deps.Notify != nil {
			r.deps.Notify(name)
		}
	}
	return nil
}

// renderDevice stores the rendered spec of a device and sets its SpecValid condition. It
// returns the rendered version and whether it is new. The rendered spec of a deleted device is
// removed.
func (r *runner) renderDevice(ctx context.Context, tx store.Tx, name string) (int64, bool, error) {
	obj, err := tx.Get(ctx, store.KindDevice, name)
	if errors.Is(err, store.ErrNotFound) {
		return 0, false, tx.DeleteRendered(ctx, name)
	}
	if err != nil {
		return 0, false, err
	}
	device := obj.(*fleetplanev1.Device)

	rendered, err := RenderDeviceSpec(device.GetSpec())
	var specErr *specError
	if errors.As(err, &specErr) {
		return 0, false, r.rejectSpec(ctx, tx, device, specErr)
	}
	if err != nil {
		return 0, false, err
	}

	version, changed, err := tx.PutRendered(ctx, name, rendered)
	if err != nil {
		return 0, false, err
	}
	_, _, err = updateDeviceCondition(ctx, tx, device, &fleetplanev1.Condition{
		Type:               ConditionSpecValid,
		Status:             statusTrue,
		Reason:             reasonSpecRendered,
		Message:            "the spec is rendered for the agent",
		ObservedGeneration: device.GetMetadata().GetGeneration(),
	})
	return version, changed, err
}

// rejectSpec sets SpecValid to False and, when that changed, records a Warning event. The
// device keeps its last rendered spec.
func (r *runner) rejectSpec(
	ctx context.Context, tx store.Tx, device *fleetplanev1.Device, specErr *specError,
) error {
	_, changed, err := updateDeviceCondition(ctx, tx, device, &fleetplanev1.Condition{
		Type:               ConditionSpecValid,
		Status:             statusFalse,
		Reason:             specErr.reason,
		Message:            specErr.message,
		ObservedGeneration: device.GetMetadata().GetGeneration(),
	})
	if err != nil || !changed {
		return err
	}
	return recordWarning(ctx, tx, store.KindDevice, device.GetMetadata().GetName(),
		TaskDeviceRender, reasonSpecRejected, specErr.message)
}

// RenderDeviceSpec turns a device spec into the rendered spec that the agent applies, with its
// content hash set and its rendered version empty. Problems in the spec are returned as one
// error listing each, prefixed with its field path.
func RenderDeviceSpec(spec *fleetplanev1.DeviceSpec) (*fleetplanev1.RenderedDeviceSpec, error) {
	rendered := &fleetplanev1.RenderedDeviceSpec{
		Os:           proto.Clone(spec.GetOs()).(*fleetplanev1.DeviceOsSpec),
		Applications: cloneAll(spec.GetApplications()),
		Systemd:      proto.Clone(spec.GetSystemd()).(*fleetplanev1.DeviceSystemdSpec),
		Resources:    cloneAll(spec.GetResources()),
		UpdatePolicy: proto.Clone(spec.GetUpdatePolicy()).(*fleetplanev1.DeviceUpdatePolicySpec),
	}

	var problems []string
	reason := reasonInvalidSpec
	writtenBy := make(map[string]string)
	for i, provider := range spec.GetConfig() {
		path := fmt.Sprintf("spec.config[%d]", i)
		files, err := renderProvider(path, provider, writtenBy)
		var specErr *specError
		if errors.As(err, &specErr) {
			problems = append(problems, specErr.message)
			if specErr.reason == reasonUnsupportedSource {
				reason = reasonUnsupportedSource
			}
			continue
		}
		rendered.Files = append(rendered.Files, files...)
	}
	if len(problems) > 0 {
		return nil, &specError{reason: reason, message: strings.Join(problems, "; ")}
	}

	hash, err := contentHash(rendered)
	if err != nil {
		return nil, err
	}
	rendered.ContentHash = hash
	return rendered, nil
}

// renderProvider returns the files of one config provider. writtenBy maps each file path
// written so far to the field that wrote it, to reject two files with the same path.
func renderProvider(
	path string, provider *fleetplanev1.ConfigProviderSpec, writtenBy map[string]string,
) ([]*fleetplanev1.RenderedFile, error) {
	sources := 0
	isSet := []bool{
		len(provider.GetInline()) > 0, provider.GetGitRef() != nil, provider.GetHttpRef() != nil,
	}
	for _, set := range isSet {
		if set {
			sources++
		}
	}
	switch {
	case sources > 1:
		return nil, &specError{reasonInvalidSpec, fmt.Sprintf(
			"%s: set exactly one of inline, gitRef and httpRef", path)}
	case provider.GetGitRef() != nil:
		// TODO: fetch files from git repositories.
		return nil, &specError{reasonUnsupportedSource, fmt.Sprintf(
			"%s.gitRef: config from git repositories is not supported yet; use inline files", path)}
	case provider.GetHttpRef() != nil:
		// TODO: fetch files from HTTP repositories.
		return nil, &specError{reasonUnsupportedSource, fmt.Sprintf(
			"%s.httpRef: config from HTTP repositories is not supported yet; use inline files", path)}
	}

	var files []*fleetplanev1.RenderedFile
	var problems []string
	for j, file := range provider.GetInline() {
		filePath := fmt.Sprintf("%s.inline[%d]", path, j)
		rendered, err := renderFile(filePath, file)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if first, ok := writtenBy[file.GetPath()]; ok {
			problems = append(problems, fmt.Sprintf("%s.path: %s is also written by %s; give each file its own path",
				filePath, file.GetPath(), first))
			continue
		}
		writtenBy[file.GetPath()] = filePath
		files = append(files, rendered)
	}
	if len(problems) > 0 {
		return nil, &specError{reasonInvalidSpec, strings.Join(problems, "; ")}
	}
	return files, nil
}

// renderFile decodes one inline file.
func renderFile(path string, file *fleetplanev1.FileSpec) (*fleetplanev1.RenderedFile, error) {
	if !strings.HasPrefix(file.GetPath(), "/") {
		return nil, fmt.Errorf("%s.path: %q is not an absolute path; start it with /", path, file.GetPath())
	}
	var content []byte
	switch file.GetContentEncoding() {
	case "", "plain":
		content = []byte(file.GetContent())
	case "base64":
		decoded, err := base64.StdEncoding.DecodeString(file.GetContent())
		if err != nil {
			return nil, fmt.Errorf("%s.content: invalid base64: %v", path, err)
		}
		content = decoded
	default:
		return nil, fmt.Errorf("%s.contentEncoding: %q is not supported; use plain or base64",
			path, file.GetContentEncoding())
	}
	mode := file.GetMode()
	if mode < 0 || mode > 0o7777 {
		return nil, fmt.Errorf("%s.mode: %d is not a file mode; use a value from 0 to 4095 (0o7777)", path, mode)
	}
	if mode == 0 {
		mode = defaultFileMode
	}
	return &fleetplanev1.RenderedFile{
		Path:    file.GetPath(),
		Content: content,
		Mode:    mode,
		User:    file.GetUser(),
		Group:   file.GetGroup(),
	}, nil
}

// contentHash returns the hex SHA-256 of the rendered spec's deterministic protobuf encoding,
// without its version and hash.
//
// NOTE: deterministic encoding is stable within one build but not guaranteed across protobuf
// library versions, so an upgrade may change every hash once and give each device one new
// rendered version with the same content.
func contentHash(rendered *fleetplanev1.RenderedDeviceSpec) (string, error) {
	content := proto.Clone(rendered).(*fleetplanev1.RenderedDeviceSpec)
	content.RenderedVersion = ""
	content.ContentHash = ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(content)
	if err != nil {
		return "", fmt.Errorf("encode rendered spec: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

func cloneAll[T proto.Message](in []T) []T {
	if in == nil {
		return nil
	}
	out := make([]T, len(in))
	for i, m := range in {
		out[i] = proto.Clone(m).(T)
	}
	return out
}
