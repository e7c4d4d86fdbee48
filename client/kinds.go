package client

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
)

// APIVersion is the apiVersion of every Fleetplane resource.
const APIVersion = "fleetplane.dev/v1"

// Kind describes one resource kind and the calls the API offers for it.
type Kind struct {
	// Name is the kind as written in resource files, such as "Fleet".
	Name string
	// Plural is the lowercase plural used in messages, such as "fleets".
	Plural string
	// Aliases are the lowercase names that ResolveKind accepts besides Name and Plural.
	Aliases []string
	// Applicable is true for kinds that a resource file may create or update.
	Applicable bool

	newObject func() proto.Message
	ops       ops
}

// New returns an empty message of the kind, such as a *fleetplanev1.Fleet.
func (k *Kind) New() proto.Message { return k.newObject() }

// Can reports whether the API supports verb ("get", "list", "create", "update", "delete",
// "deleteAll" or "watch") for the kind.
func (k *Kind) Can(verb string) bool {
	o := k.ops
	switch verb {
	case "get":
		return o.get != nil
	case "list":
		return o.list != nil
	case "create":
		return o.create != nil
	case "update":
		return o.update != nil
	case "delete":
		return o.delete != nil
	case "deleteAll":
		return o.deleteAll != nil
	case "watch":
		return o.watch != nil
	}
	return false
}

var kinds = []*Kind{
	{Name: "Device", Plural: "devices", Aliases: []string{"dev"}, Applicable: true,
		newObject: func() proto.Message { return &fleetplanev1.Device{} }, ops: deviceOps},
	{Name: "Fleet", Plural: "fleets", Applicable: true,
		newObject: func() proto.Message { return &fleetplanev1.Fleet{} }, ops: fleetOps},
	{Name: "TemplateVersion", Plural: "templateversions", Aliases: []string{"tv"},
		newObject: func() proto.Message { return &fleetplanev1.TemplateVersion{} },
		ops:       templateVersionOps},
	{Name: "Repository", Plural: "repositories", Aliases: []string{"repo"}, Applicable: true,
		newObject: func() proto.Message { return &fleetplanev1.Repository{} },
		ops:       repositoryOps},
	{Name: "ResourceSync", Plural: "resourcesyncs", Aliases: []string{"rs"}, Applicable: true,
		newObject: func() proto.Message { return &fleetplanev1.ResourceSync{} },
		ops:       resourceSyncOps},
	{Name: "EnrollmentRequest", Plural: "enrollmentrequests", Aliases: []string{"er", "csr"},
		Applicable: true,
		newObject:  func() proto.Message { return &fleetplanev1.EnrollmentRequest{} },
		ops:        enrollmentRequestOps},
	{Name: "Event", Plural: "events", Aliases: []string{"ev"},
		newObject: func() proto.Message { return &fleetplanev1.Event{} }, ops: eventOps},
	{Name: "Task", Plural: "tasks",
		newObject: func() proto.Message { return &fleetplanev1.Task{} }, ops: taskOps},
	{Name: "Replica", Plural: "replicas",
		newObject: func() proto.Message { return &fleetplanev1.Replica{} }, ops: replicaOps},
	{Name: "AgentSession", Plural: "agentsessions", Aliases: []string{"session"},
		newObject: func() proto.Message { return &fleetplanev1.AgentSession{} },
		ops:       agentSessionOps},
}

// Kinds returns every kind, in a fixed order.
func Kinds() []*Kind {
	return append([]*Kind(nil), kinds...)
}

// KindNames returns the names of the kinds for which keep returns true, sorted.
func KindNames(keep func(*Kind) bool) []string {
	var names []string
	for _, k := range kinds {
		if keep == nil || keep(k) {
			names = append(names, k.Name)
		}
	}
	sort.Strings(names)
	return names
}

// ResolveKind finds a kind by its name, singular or plural, or an alias or its plural (alias
// followed by "s"), ignoring case.
func ResolveKind(name string) (*Kind, error) {
	lower := strings.ToLower(strings.TrimSpace(name))
	for _, k := range kinds {
		if slices.Contains(AcceptedNames(k), lower) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("unknown resource kind %q; use one of %s", name,
		strings.Join(kindChoices(), ", "))
}

// AcceptedNames returns the lowercase names that ResolveKind accepts for k, the singular first.
func AcceptedNames(k *Kind) []string {
	names := []string{strings.ToLower(k.Name), k.Plural}
	for _, alias := range k.Aliases {
		names = append(names, alias, alias+"s")
	}
	return names
}

// kindChoices lists every kind with its aliases, as "singular (aliases)".
func kindChoices() []string {
	var out []string
	for _, k := range kinds {
		choice := strings.ToLower(k.Name)
		if len(k.Aliases) > 0 {
			choice += " (" + strings.Join(k.Aliases, ", ") + ")"
		}
		out = append(out, choice)
	}
	return out
}

// KindOf returns the kind of msg, or nil when msg is not a Fleetplane resource.
func KindOf(msg proto.Message) *Kind {
	name := string(msg.ProtoReflect().Descriptor().Name())
	for _, k := range kinds {
		if k.Name == name {
			return k
		}
	}
	return nil
}
