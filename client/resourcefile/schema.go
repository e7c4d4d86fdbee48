package resourcefile

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// fieldError is a problem at one path of a document.
type fieldError struct {
	path    string
	problem string
}

// checkMessage checks that v, decoded from JSON with UseNumber, fits message md: every key is a
// field and every value has the field's type. protojson would find the same problems, but its
// errors name neither the field's path nor a fix.
func checkMessage(md protoreflect.MessageDescriptor, v any, path string) *fieldError {
	switch md.FullName() {
	case "google.protobuf.Value":
		return nil
	case "google.protobuf.Timestamp":
		if _, ok := v.(string); !ok {
			return typeError(path, "an RFC 3339 timestamp string", v)
		}
		return nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return typeError(path, "a mapping", v)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		fieldPath := join(path, key)
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(key))
		}
		if fd == nil {
			return &fieldError{fieldPath, unknownField(md, key)}
		}
		if err := checkField(fd, obj[key], fieldPath); err != nil {
			return err
		}
	}
	return nil
}

func checkField(fd protoreflect.FieldDescriptor, v any, path string) *fieldError {
	if v == nil {
		return nil // null leaves the field unset
	}
	switch {
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok {
			return typeError(path, "a mapping", v)
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := checkValue(fd.MapValue(), obj[k], mapPath(path, k)); err != nil {
				return err
			}
		}
		return nil
	case fd.IsList():
		list, ok := v.([]any)
		if !ok {
			return typeError(path, "a list", v)
		}
		for i, item := range list {
			if err := checkValue(fd, item, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	return checkValue(fd, v, path)
}

// checkValue checks one value of fd's element type.
func checkValue(fd protoreflect.FieldDescriptor, v any, path string) *fieldError {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if v == nil {
			return nil
		}
		return checkMessage(fd.Message(), v, path)
	case protoreflect.StringKind:
		if _, ok := v.(string); !ok {
			return typeError(path, "a string", v)
		}
	case protoreflect.BytesKind:
		if _, ok := v.(string); !ok {
			return typeError(path, "a base64 string", v)
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			return typeError(path, "true or false", v)
		}
	case protoreflect.EnumKind:
		return checkEnum(fd.Enum(), v, path)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if !isNumber(v) {
			return typeError(path, "a number", v)
		}
	default:
		return checkInteger(fd.Kind(), v, path)
	}
	return nil
}

func checkEnum(ed protoreflect.EnumDescriptor, v any, path string) *fieldError {
	var names []string
	for i := 0; i < ed.Values().Len(); i++ {
		names = append(names, string(ed.Values().Get(i).Name()))
	}
	if s, ok := v.(string); ok {
		if ed.Values().ByName(protoreflect.Name(s)) != nil {
			return nil
		}
		return &fieldError{path, fmt.Sprintf("invalid value %q; use one of %s", s,
			strings.Join(names, ", "))}
	}
	if _, ok := v.(json.Number); ok {
		return nil
	}
	return typeError(path, "one of "+strings.Join(names, ", "), v)
}

// checkInteger accepts a JSON number or a string that contains one, as protojson does, when the value
// is a whole number in the range of kind.
func checkInteger(kind protoreflect.Kind, v any, path string) *fieldError {
	var text string
	switch n := v.(type) {
	case json.Number:
		text = n.String()
	case string:
		text = n
	default:
		return typeError(path, "an integer", v)
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || f != math.Trunc(f) {
		return typeError(path, "an integer", v)
	}
	lo, hi := integerRange(kind)
	if f < lo || f > hi {
		return &fieldError{path, fmt.Sprintf("%s is out of range; use a whole number from "+
			"%.0f to %.0f", text, lo, hi)}
	}
	return nil
}

func integerRange(kind protoreflect.Kind) (lo, hi float64) {
	switch kind {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return math.MinInt32, math.MaxInt32
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return 0, math.MaxUint32
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return 0, math.MaxUint64
	}
	return math.MinInt64, math.MaxInt64
}

func isNumber(v any) bool {
	switch n := v.(type) {
	case json.Number:
		return true
	case string:
		_, err := strconv.ParseFloat(n, 64)
		return err == nil || n == "NaN" || n == "Infinity" || n == "-Infinity"
	}
	return false
}

// typeError reports a value of the wrong type. It names the value's type but never the value,
// because the field may contain a secret such as a repository password.
func typeError(path, want string, got any) *fieldError {
	problem := fmt.Sprintf("expected %s, got %s", want, typeName(got))
	if want == "a string" {
		switch got.(type) {
		case json.Number, bool:
			problem += "; quote the value so that YAML reads it as a string"
		}
	}
	return &fieldError{path, problem}
}

// typeName names the type of a value decoded from JSON, such as "a number".
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

// describe names a decoded JSON value's type, with the value when it is short. Only fields that
// never contain secrets, such as apiVersion, may use it.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return fmt.Sprintf("string %q", x)
	case json.Number:
		return "number " + x.String()
	case bool:
		return fmt.Sprintf("boolean %t", x)
	}
	return typeName(v)
}

// unknownField names the closest field of md, or lists them all.
func unknownField(md protoreflect.MessageDescriptor, key string) string {
	var names []string
	best, bestDistance := "", 3
	for i := 0; i < md.Fields().Len(); i++ {
		name := md.Fields().Get(i).JSONName()
		names = append(names, name)
		if d := editDistance(strings.ToLower(key), strings.ToLower(name)); d < bestDistance {
			best, bestDistance = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown field; did you mean %q?", best)
	}
	return fmt.Sprintf("unknown field; %s has %s", md.Name(), strings.Join(names, ", "))
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapPath appends a map key, quoting keys that contain dots, slashes or other punctuation.
func mapPath(path, key string) string {
	if plainKey.MatchString(key) {
		return join(path, key)
	}
	return fmt.Sprintf("%s[%q]", path, key)
}
