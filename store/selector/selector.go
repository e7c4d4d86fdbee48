// Package selector parses and evaluates Kubernetes-syntax label and field selectors.
//
// Label selectors support =, ==, !=, in, notin, key and !key, through the Kubernetes
// apimachinery parser. Field selectors support =, == and != on the dotted JSON path of a scalar
// field, for example metadata.name, metadata.owner or status.summary.status.
package selector

import (
	"fmt"
	"sort"
	"strings"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// Labels matches a set of labels.
type Labels struct {
	sel labels.Selector
}

// Everything matches every label set.
var Everything = Labels{sel: labels.Everything()}

// ParseLabels parses a label selector such as "env=prod,zone in (a,b),!canary". The empty
// string matches everything.
func ParseLabels(s string) (Labels, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return Labels{}, fmt.Errorf("invalid label selector %q: %v", s, err)
	}
	return Labels{sel: sel}, nil
}

// Matches reports whether set satisfies the selector.
func (l Labels) Matches(set map[string]string) bool {
	if l.sel == nil {
		return true
	}
	return l.sel.Matches(labels.Set(set))
}

// Empty reports whether the selector has no requirements.
func (l Labels) Empty() bool {
	return l.sel == nil || l.sel.Empty()
}

// String returns the selector in canonical text form.
func (l Labels) String() string {
	if l.sel == nil {
		return ""
	}
	return l.sel.String()
}

// FromLabelSelector converts a fleet's LabelSelector. A nil or empty selector yields an empty
// Labels, which callers that assign ownership must treat as matching nothing.
func FromLabelSelector(ls *fleetplanev1.LabelSelector) (Labels, error) {
	sel := labels.NewSelector()
	keys := make([]string, 0, len(ls.GetMatchLabels()))
	for k := range ls.GetMatchLabels() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r, err := labels.NewRequirement(k, selection.Equals, []string{ls.GetMatchLabels()[k]})
		if err != nil {
			return Labels{}, fmt.Errorf("matchLabels[%s]: %v", k, err)
		}
		sel = sel.Add(*r)
	}
	for i, e := range ls.GetMatchExpressions() {
		var op selection.Operator
		switch e.GetOperator() {
		case "In":
			op = selection.In
		case "NotIn":
			op = selection.NotIn
		case "Exists":
			op = selection.Exists
		case "DoesNotExist":
			op = selection.DoesNotExist
		default:
			return Labels{}, fmt.Errorf("matchExpressions[%d].operator: %q is not one of In, NotIn, Exists, DoesNotExist", i, e.GetOperator())
		}
		r, err := labels.NewRequirement(e.GetKey(), op, e.GetValues())
		if err != nil {
			return Labels{}, fmt.Errorf("matchExpressions[%d]: %v", i, err)
		}
		sel = sel.Add(*r)
	}
	return Labels{sel: sel}, nil
}

// Fields matches objects by the values of their scalar fields.
type Fields struct {
	reqs []fieldRequirement
}

type fieldRequirement struct {
	path  []string
	value string
	equal bool
}

// ParseFields parses a field selector such as "metadata.owner=Fleet/edge,status.summary.status!=Online"
// and checks each path against the message type of kind's objects (one of the store kinds,
// given as an empty message).
func ParseFields(s string, prototype proto.Message) (Fields, error) {
	sel, err := fields.ParseSelector(s)
	if err != nil {
		return Fields{}, fmt.Errorf("invalid field selector %q: %v", s, err)
	}
	var out Fields
	for _, r := range sel.Requirements() {
		var equal bool
		switch r.Operator {
		case selection.Equals, selection.DoubleEquals:
			equal = true
		case selection.NotEquals:
			equal = false
		default:
			return Fields{}, fmt.Errorf("invalid field selector %q: operator %q is not supported; use =, == or !=", s, r.Operator)
		}
		path := strings.Split(r.Field, ".")
		if err := checkPath(prototype.ProtoReflect().Descriptor(), path); err != nil {
			return Fields{}, fmt.Errorf("invalid field selector %q: field %q: %v", s, r.Field, err)
		}
		out.reqs = append(out.reqs, fieldRequirement{path: path, value: r.Value, equal: equal})
	}
	return out, nil
}

// Empty reports whether the selector has no requirements.
func (f Fields) Empty() bool { return len(f.reqs) == 0 }

// Matches reports whether obj satisfies every requirement. A missing field has the value "".
func (f Fields) Matches(obj proto.Message) bool {
	for _, r := range f.reqs {
		if (lookup(obj.ProtoReflect(), r.path) == r.value) != r.equal {
			return false
		}
	}
	return true
}

func fieldByJSONName(md protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	fds := md.Fields()
	if fd := fds.ByJSONName(name); fd != nil {
		return fd
	}
	return fds.ByName(protoreflect.Name(name))
}

func checkPath(md protoreflect.MessageDescriptor, path []string) error {
	for i, part := range path {
		fd := fieldByJSONName(md, part)
		if fd == nil {
			return fmt.Errorf("%q has no field %q", strings.Join(path[:i], "."), part)
		}
		if fd.IsList() || fd.IsMap() {
			return fmt.Errorf("%q is a list or map; only scalar fields can be selected", part)
		}
		last := i == len(path)-1
		isMessage := fd.Kind() == protoreflect.MessageKind
		switch {
		case last && isMessage:
			return fmt.Errorf("%q is an object; select one of its fields", part)
		case !last && !isMessage:
			return fmt.Errorf("%q is not an object", part)
		}
		if isMessage {
			md = fd.Message()
		}
	}
	return nil
}

func lookup(m protoreflect.Message, path []string) string {
	for i, part := range path {
		fd := fieldByJSONName(m.Descriptor(), part)
		if fd == nil {
			return ""
		}
		if i < len(path)-1 {
			if !m.Has(fd) {
				return ""
			}
			m = m.Get(fd).Message()
			continue
		}
		return fmt.Sprint(m.Get(fd).Interface())
	}
	return ""
}
