// Package resourcefile reads and writes Fleetplane resource files: YAML or JSON documents of the
// form {apiVersion: fleetplane.dev/v1, kind, metadata, spec}, several to a file when separated by
// "---" lines. The shapes follow Flight Control's v1beta1 resources, so a file written for that
// system reads here once its apiVersion is changed.
//
// Parse checks every field against the protobuf schema before decoding, so that an error names
// the file, the document, the object and the path of the field, such as
// spec.template.spec.config[0].inline[0].mode.
package resourcefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/fleetplane/fleetplane/client"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// Document is one resource read from a file.
type Document struct {
	// Source is the file name, or "-" for standard input.
	Source string
	// Index is the document's position in the file, from 1.
	Index int
	// Item is the object's position in a List document, from 1, or 0 outside a List.
	Item int
	// Line is the file line where the document starts, from 1.
	Line   int
	Kind   *client.Kind
	Object proto.Message
}

// Name returns the object's metadata.name.
func (d *Document) Name() string { return metaName(d.Object) }

// String returns "kind/name" in lowercase kind, as the command line prints it.
func (d *Document) String() string {
	return strings.ToLower(d.Kind.Name) + "/" + d.Name()
}

// Location returns where the object came from, such as "fleet.yaml, document 2" or
// "-, document 1 item 3".
func (d *Document) Location() string {
	if d.Item > 0 {
		return fmt.Sprintf("%s, document %d item %d", d.Source, d.Index, d.Item)
	}
	return fmt.Sprintf("%s, document %d", d.Source, d.Index)
}

// Error is a problem in one document.
type Error struct {
	Source   string
	Document int
	// Item is the object's position in a List document, from 1, or 0 outside a List.
	Item int
	// Kind and Name identify the object when the document got that far.
	Kind, Name string
	// Line is the file line of a YAML syntax error, or 0.
	Line int
	// Field is the path of the offending field, such as "spec.selector.matchLabels".
	Field   string
	Problem string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: document %d", e.Source, e.Document)
	if e.Item > 0 {
		fmt.Fprintf(&b, " item %d", e.Item)
	}
	if e.Kind != "" && e.Name != "" {
		fmt.Fprintf(&b, " (%s/%s)", e.Kind, e.Name)
	} else if e.Kind != "" {
		fmt.Fprintf(&b, " (%s)", e.Kind)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, ": line %d", e.Line)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ": %s", e.Field)
	}
	return b.String() + ": " + e.Problem
}

// Parse reads every document of data, which came from source. It returns the documents that
// parsed, and an error that joins one *Error for each document that did not. A caller that must
// not act on a partly valid file checks the error first.
func Parse(source string, data []byte) ([]*Document, error) {
	var docs []*Document
	var errs []error
	for i, chunk := range splitDocuments(data) {
		parsed, err := parseDocument(source, i+1, chunk)
		docs = append(docs, parsed...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return docs, errors.Join(errs...)
}

// chunk is the text of one document and the file line where it starts.
type chunk struct {
	text []byte
	line int
}

// splitDocuments splits data at lines that contain only "---" (optionally followed by a comment).
// Every chunk keeps its starting line so that YAML errors can name file lines.
func splitDocuments(data []byte) []chunk {
	var chunks []chunk
	start, startLine := 0, 1
	line := 1
	for pos := 0; pos <= len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos
		}
		if isSeparator(data[pos:end]) {
			chunks = append(chunks, chunk{data[start:pos], startLine})
			start, startLine = end+1, line+1
		}
		pos, line = end+1, line+1
	}
	if start < len(data) {
		chunks = append(chunks, chunk{data[start:], startLine})
	} else {
		chunks = append(chunks, chunk{nil, startLine})
	}
	return chunks
}

func isSeparator(line []byte) bool {
	line = bytes.TrimRight(line, " \t\r")
	if !bytes.HasPrefix(line, []byte("---")) {
		return false
	}
	rest := bytes.TrimLeft(line[3:], " \t")
	return len(rest) == 0 || (len(rest) < len(line[3:]) && rest[0] == '#')
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// parseDocument returns the objects of one document: none for a document without content,
// several for a List.
func parseDocument(source string, index int, c chunk) ([]*Document, error) {
	fail := func(field, format string, args ...any) *Error {
		return &Error{Source: source, Document: index, Field: field,
			Problem: fmt.Sprintf(format, args...)}
	}
	if isBlank(c.text) {
		return nil, nil
	}

	jsonData, err := yaml.YAMLToJSON(c.text)
	if err != nil {
		return nil, yamlError(source, index, c.line, err)
	}
	var raw any
	dec := json.NewDecoder(bytes.NewReader(jsonData))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fail("", "invalid document: %v", err)
	}
	top, ok := raw.(map[string]any)
	if !ok {
		return nil, fail("", "expected a mapping with apiVersion, kind, metadata and spec, "+
			"got %s", describe(raw))
	}
	if top["kind"] != listKind {
		doc, err := parseObject(source, index, 0, top)
		if err != nil {
			return nil, err
		}
		doc.Line = c.line
		return []*Document{doc}, nil
	}
	return parseList(source, index, c.line, top)
}

// listKind is the kind of a document whose items field contains several objects, as
// "fleetplane get -o json" writes for more than one object.
const listKind = "List"

func parseList(source string, index, line int, top map[string]any) ([]*Document, error) {
	for key := range top {
		if key != "apiVersion" && key != "kind" && key != "items" && key != "metadata" {
			return nil, &Error{Source: source, Document: index, Kind: listKind, Field: key,
				Problem: "unknown field; a List has apiVersion, kind and items"}
		}
	}
	items, ok := top["items"].([]any)
	if !ok && top["items"] != nil {
		return nil, &Error{Source: source, Document: index, Kind: listKind, Field: "items",
			Problem: "expected a list, got " + describe(top["items"])}
	}
	var docs []*Document
	var errs []error
	for i, item := range items {
		obj, ok := item.(map[string]any)
		if !ok {
			errs = append(errs, &Error{Source: source, Document: index, Item: i + 1,
				Problem: "expected a mapping with apiVersion, kind, metadata and spec, got " +
					describe(item)})
			continue
		}
		doc, err := parseObject(source, index, i+1, obj)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		doc.Line = line
		docs = append(docs, doc)
	}
	return docs, errors.Join(errs...)
}

// parseObject turns one decoded object into a Document; item is its position in a List, or 0.
func parseObject(source string, index, item int, top map[string]any) (*Document, error) {
	kind, perr := checkHeader(top)
	name := ""
	if meta, ok := top["metadata"].(map[string]any); ok {
		name, _ = meta["name"].(string)
	}
	if perr != nil {
		perr.Source, perr.Document, perr.Item, perr.Name = source, index, item, name
		return nil, perr
	}
	// Status belongs to the server and is ignored on apply.
	delete(top, "status")

	obj := kind.New()
	wrap := func(field, problem string) *Error {
		return &Error{Source: source, Document: index, Item: item, Kind: kind.Name, Name: name,
			Field: field, Problem: problem}
	}
	if fe := checkMessage(obj.ProtoReflect().Descriptor(), top, ""); fe != nil {
		return nil, wrap(fe.path, fe.problem)
	}
	cleaned, err := json.Marshal(top)
	if err != nil {
		return nil, wrap("", err.Error())
	}
	if err := protojson.Unmarshal(cleaned, obj); err != nil {
		return nil, wrap("", strings.TrimPrefix(err.Error(), "proto: "))
	}
	if fe := checkMetadata(obj); fe != nil {
		return nil, wrap(fe.path, fe.problem)
	}
	return &Document{Source: source, Index: index, Item: item, Kind: kind, Object: obj}, nil
}

func isBlank(text []byte) bool {
	for _, line := range bytes.Split(text, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' && !bytes.Equal(line, []byte("...")) {
			return false
		}
	}
	return true
}

// yamlError turns a YAML syntax error into an *Error with a file line.
func yamlError(source string, index, firstLine int, err error) *Error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	e := &Error{Source: source, Document: index}
	if m := yamlLine.FindStringSubmatchIndex(msg); m != nil {
		n, _ := strconv.Atoi(msg[m[2]:m[3]])
		e.Line = firstLine + n - 1
		msg = strings.TrimPrefix(strings.TrimSpace(msg[:m[0]]+msg[m[1]:]), ": ")
	}
	e.Problem = "invalid YAML: " + msg
	return e
}

// checkHeader checks apiVersion and kind and returns the kind.
func checkHeader(top map[string]any) (*client.Kind, *Error) {
	known := strings.Join(client.KindNames(func(k *client.Kind) bool { return k.Applicable }), ", ")
	rawKind, ok := top["kind"]
	if !ok {
		return nil, &Error{Field: "kind", Problem: "missing; set it to one of " + known}
	}
	kindName, ok := rawKind.(string)
	if !ok {
		return nil, &Error{Field: "kind", Problem: fmt.Sprintf(
			"expected a string, got %s; set it to one of %s", describe(rawKind), known)}
	}
	kind := kindByName(kindName)
	if kind == nil {
		return nil, &Error{Field: "kind", Problem: fmt.Sprintf(
			"unknown kind %q; use one of %s", kindName, known)}
	}
	if !kind.Applicable {
		return nil, &Error{Kind: kind.Name, Field: "kind", Problem: fmt.Sprintf(
			"%s objects are created by the server and cannot be applied; use one of %s",
			kind.Name, known)}
	}
	version, ok := top["apiVersion"].(string)
	switch {
	case !ok && top["apiVersion"] == nil:
		return nil, &Error{Kind: kind.Name, Field: "apiVersion",
			Problem: "missing; set it to " + client.APIVersion}
	case version != client.APIVersion:
		return nil, &Error{Kind: kind.Name, Field: "apiVersion", Problem: fmt.Sprintf(
			"unsupported version %s; change apiVersion to %s",
			describe(top["apiVersion"]), client.APIVersion)}
	}
	return kind, nil
}

// kindByName matches the exact kind as written in resource files.
func kindByName(name string) *client.Kind {
	for _, k := range client.Kinds() {
		if k.Name == name {
			return k
		}
	}
	return nil
}
