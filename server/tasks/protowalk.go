package tasks

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// stringVisitor receives one populated string value, its field path (JSON names, list indexes
// and map keys, for example "spec.applications[0].envVars[LOG_LEVEL]") and a function that
// replaces the value in the message.
type stringVisitor func(path, value string, set func(string))

// walkStrings calls visit for every non-empty string field, list element and map value in m,
// depth first in field-number order with map keys sorted, so the order is the same on every
// run. Reflection covers fields that are added to the messages later without code changes.
func walkStrings(m protoreflect.Message, path string, visit stringVisitor) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		fieldPath := fd.JSONName()
		if path != "" {
			fieldPath = path + "." + fieldPath
		}
		switch {
		case fd.IsList():
			walkList(m, fd, fieldPath, visit)
		case fd.IsMap():
			walkMap(m, fd, fieldPath, visit)
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			walkStrings(m.Get(fd).Message(), fieldPath, visit)
		case fd.Kind() == protoreflect.StringKind:
			visit(fieldPath, m.Get(fd).String(), func(s string) {
				m.Set(fd, protoreflect.ValueOfString(s))
			})
		}
	}
}

func walkList(m protoreflect.Message, fd protoreflect.FieldDescriptor, path string, visit stringVisitor) {
	list := m.Get(fd).List()
	for i := 0; i < list.Len(); i++ {
		elemPath := fmt.Sprintf("%s[%d]", path, i)
		switch fd.Kind() {
		case protoreflect.MessageKind, protoreflect.GroupKind:
			walkStrings(list.Get(i).Message(), elemPath, visit)
		case protoreflect.StringKind:
			index := i
			visit(elemPath, list.Get(i).String(), func(s string) {
				m.Mutable(fd).List().Set(index, protoreflect.ValueOfString(s))
			})
		}
	}
}

func walkMap(m protoreflect.Message, fd protoreflect.FieldDescriptor, path string, visit stringVisitor) {
	entries := m.Get(fd).Map()
	keys := make([]protoreflect.MapKey, 0, entries.Len())
	entries.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })

	valueKind := fd.MapValue().Kind()
	for _, k := range keys {
		entryPath := fmt.Sprintf("%s[%s]", path, k.String())
		switch valueKind {
		case protoreflect.MessageKind, protoreflect.GroupKind:
			walkStrings(entries.Get(k).Message(), entryPath, visit)
		case protoreflect.StringKind:
			key := k
			visit(entryPath, entries.Get(k).String(), func(s string) {
				m.Mutable(fd).Map().Set(key, protoreflect.ValueOfString(s))
			})
		}
	}
}
