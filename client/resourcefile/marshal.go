package resourcefile

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/fleetplane/fleetplane/client"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"
)

// Formats that Marshal writes.
const (
	FormatYAML = "yaml"
	FormatJSON = "json"
)

// Marshal writes obj as YAML or JSON with camelCase field names, its status included. For a
// resource it sets apiVersion and kind, so the output can be applied again.
func Marshal(obj proto.Message, format string) ([]byte, error) {
	obj = withKind(obj)
	data, err := protojson.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", obj.ProtoReflect().Descriptor().Name(), err)
	}
	switch format {
	case FormatJSON:
		var out bytes.Buffer
		if err := json.Indent(&out, data, "", "  "); err != nil {
			return nil, fmt.Errorf("indent JSON: %w", err)
		}
		out.WriteByte('\n')
		return out.Bytes(), nil
	case FormatYAML:
		return yaml.JSONToYAML(data)
	}
	return nil, fmt.Errorf("unknown output format %q; use yaml or json", format)
}

// withKind returns a copy of obj with apiVersion and kind set, or obj itself when it is not a
// resource.
func withKind(obj proto.Message) proto.Message {
	kind := client.KindOf(obj)
	fields := obj.ProtoReflect().Descriptor().Fields()
	apiVersion, kindField := fields.ByName("api_version"), fields.ByName("kind")
	if kind == nil || apiVersion == nil || kindField == nil {
		return obj
	}
	out := proto.Clone(obj)
	m := out.ProtoReflect()
	m.Set(apiVersion, protoreflect.ValueOfString(client.APIVersion))
	m.Set(kindField, protoreflect.ValueOfString(kind.Name))
	return out
}

// metaName returns obj's metadata.name, or "" when it has none.
func metaName(obj proto.Message) string {
	m, _ := field(obj, "metadata").(*fleetplanev1.ObjectMeta)
	return m.GetName()
}

// field returns the message field name of obj, or nil when it is unset or not a message.
func field(obj proto.Message, name protoreflect.Name) proto.Message {
	m := obj.ProtoReflect()
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil || fd.Message() == nil || !m.Has(fd) {
		return nil
	}
	return m.Get(fd).Message().Interface()
}
