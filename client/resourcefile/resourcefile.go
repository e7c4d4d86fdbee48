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

// Error is a problem in one document.
type Error struct {
	Source   string
	Document int
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
		doc, err := parseDocument(source, i+1, chunk)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if doc != nil {
			docs = append(docs, doc)
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

// parseDocument returns nil and no error for a document with no content.
func parseDocument(source string, index int, c chunk) (*Document, error) {
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

	kind, perr := checkHeader(top)
	name := ""
	if meta, ok := top["metadata"].(map[string]any); ok {
		name, _ = meta["name"].(string)
	}
	if perr != nil {
		perr.Source, perr.Document, perr.Name = source, index, name
		return nil, perr
	}
	// Status belongs to the server and is ignored on apply.
	delete(top, "status")

	obj := kind.New()
	wrap := func(field, problem string) *Error {
		return &Error{Source: source, Document: index, Kind: kind.Name, Name: name,
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
	return &Document{Source: source, Index: index, Line: c.line, Kind: kind, Object: obj}, nil
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
