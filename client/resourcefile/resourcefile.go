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
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// Document is one resource read from a file.
type Document struct {
	// Source is the file name, or "-" for standard input.
	Source string
	// Index is the document's position in the file, from 1. Documents without content, such
	// as the empty one before a leading "---", are not counted.
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
	index := 0
	for _, chunk := range splitDocuments(data) {
		// Documents without content, such as the empty one before a leading "---", get no
		// number, so that "document 2" is the second object a reader sees in the file.
		if isBlank(chunk.text) {
			continue
		}
		index++
		parsed, err := parseDocument(source, index, chunk)
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

// splitDocuments splits data into YAML documents. A document ends before a "---" line and after
// a "..." line. A "---" line may carry the start of the next document, as in
// "--- {kind: Device}", so such a line stays in the chunk that follows it. Every chunk keeps its
// starting line so that YAML errors can name file lines.
func splitDocuments(data []byte) []chunk {
	var chunks []chunk
	start, startLine := 0, 1
	line := 1
	for pos := 0; pos < len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos
		}
		next := min(end+1, len(data))
		text := data[pos:end]
		if isMarker(text, "---") {
			chunks = append(chunks, chunk{data[start:pos], startLine})
			if hasContentAfterMarker(text) {
				start, startLine = pos, line
			} else {
				start, startLine = next, line+1
			}
		} else if isMarker(text, "...") && !hasContentAfterMarker(text) {
			chunks = append(chunks, chunk{data[start:next], startLine})
			start, startLine = next, line+1
		}
		pos, line = next, line+1
	}
	return append(chunks, chunk{data[start:], startLine})
}

// isMarker reports whether line starts with the document marker ("---" or "...") followed by
// the end of the line or by white space, as YAML requires.
func isMarker(line []byte, marker string) bool {
	line = bytes.TrimRight(line, "\r")
	if !bytes.HasPrefix(line, []byte(marker)) {
		return false
	}
	rest := line[len(marker):]
	return len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t'
}

// hasContentAfterMarker reports whether a marker line continues with YAML content rather than
// nothing or a comment.
func hasContentAfterMarker(line []byte) bool {
	rest := bytes.TrimSpace(line[3:])
	return len(rest) > 0 && rest[0] != '#'
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// parseDocument returns the objects of one document with content: several for a List.
func parseDocument(source string, index int, c chunk) ([]*Document, error) {
	fail := func(field, format string, args ...any) *Error {
		return &Error{Source: source, Document: index, Field: field,
			Problem: fmt.Sprintf(format, args...)}
	}
	// The strict conversion rejects a key that appears twice in one mapping, where the
	// lenient one would keep the last value and silently drop the others.
	jsonData, err := yaml.YAMLToJSONStrict(c.text)
	if err != nil {
		if e := duplicateKeyError(source, index, c, err); e != nil {
			return nil, e
		}
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
			"got %s", typeName(raw))
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
			Problem: "expected a list, got " + typeName(top["items"])}
	}
	var docs []*Document
	var errs []error
	for i, item := range items {
		obj, ok := item.(map[string]any)
		if !ok {
			errs = append(errs, &Error{Source: source, Document: index, Item: i + 1,
				Problem: "expected a mapping with apiVersion, kind, metadata and spec, got " +
					typeName(item)})
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
	if size := requestSize(obj); size > MaxRequestBytes {
		return nil, wrap("", fmt.Sprintf("the object takes %s in a request, more than the "+
			"server's limit of %s; move large inline content into a repository and refer to "+
			"it with gitRef or httpRef", formatMiB(size), formatMiB(MaxRequestBytes)))
	}
	return &Document{Source: source, Index: index, Item: item, Kind: kind, Object: obj}, nil
}

// requestSize returns the size of the create or update request for obj in the protobuf binary
// encoding that the client sends. Every such request contains the object as field 1 and
// nothing else.
func requestSize(obj proto.Message) int {
	n := proto.Size(obj)
	return protowire.SizeTag(1) + protowire.SizeBytes(n)
}

// formatMiB formats a byte count in MiB with two decimals, such as "4.00 MiB".
func formatMiB(n int) string {
	return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
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
			"expected a string, got %s; set it to one of %s", typeName(rawKind), known)}
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
