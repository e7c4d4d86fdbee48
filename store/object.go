package store

import (
	"fmt"
	"sort"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// APIVersion is the apiVersion of every Fleetplane resource.
const APIVersion = "fleetplane.dev/v1"

// kinds maps each kind to an empty message of its type.
var kinds = map[string]func() Object{
	KindDevice:            func() Object { return &fleetplanev1.Device{} },
	KindFleet:             func() Object { return &fleetplanev1.Fleet{} },
	KindTemplateVersion:   func() Object { return &fleetplanev1.TemplateVersion{} },
	KindRepository:        func() Object { return &fleetplanev1.Repository{} },
	KindResourceSync:      func() Object { return &fleetplanev1.ResourceSync{} },
	KindEnrollmentRequest: func() Object { return &fleetplanev1.EnrollmentRequest{} },
	KindEvent:             func() Object { return &fleetplanev1.Event{} },
}

// Kinds returns every resource kind, sorted.
func Kinds() []string {
	out := make([]string, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// New returns an empty object of kind, or an error naming the known kinds.
func New(kind string) (Object, error) {
	f, ok := kinds[kind]
	if !ok {
		return nil, fmt.Errorf("%w: unknown kind %q (known kinds: %v)", ErrInvalidArgument, kind, Kinds())
	}
	return f(), nil
}

// KindOf returns the kind of obj from its message name, for example "Device".
func KindOf(obj Object) string {
	return string(obj.ProtoReflect().Descriptor().Name())
}

// Meta returns obj's metadata, creating an empty one in obj if it has none.
func Meta(obj Object) *fleetplanev1.ObjectMeta {
	m := obj.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("metadata")
	return m.Mutable(fd).Message().Interface().(*fleetplanev1.ObjectMeta)
}

// Spec returns obj's spec message, or nil for kinds without a spec or when it is unset.
func Spec(obj Object) proto.Message {
	return field(obj, "spec")
}

// Status returns obj's status message, or nil for kinds without a status or when it is unset.
func Status(obj Object) proto.Message {
	return field(obj, "status")
}

// SetStatus replaces obj's status with status (nil clears it). It does nothing for kinds
// without a status.
func SetStatus(obj Object, status proto.Message) {
	setField(obj, "status", status)
}

// SetSpec replaces obj's spec with spec (nil clears it). It does nothing for kinds without a
// spec.
func SetSpec(obj Object, spec proto.Message) {
	setField(obj, "spec", spec)
}

func field(obj Object, name protoreflect.Name) proto.Message {
	m := obj.ProtoReflect()
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil || !m.Has(fd) {
		return nil
	}
	return m.Get(fd).Message().Interface()
}

func setField(obj Object, name protoreflect.Name, value proto.Message) {
	m := obj.ProtoReflect()
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil {
		return
	}
	if value == nil {
		m.Clear(fd)
		return
	}
	m.Set(fd, protoreflect.ValueOfMessage(value.ProtoReflect()))
}
