package tasks

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/template/parse"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
)

// MissingLabelError means a device lacks a label whose value a template field prints.
type MissingLabelError struct {
	Device string
	Label  string
	// Field is the path of the template field, for example spec.config[0].inline[0].content.
	Field string
}

func (e *MissingLabelError) Error() string {
	return fmt.Sprintf("device %s has no label %s, which %s uses", e.Device, e.Label, e.Field)
}

// Render returns a copy of the template's spec with every template field rendered for the
// device with the given name and labels. It returns the MissingLabelErrors of every field that
// prints a label the device does not have, joined.
func (c *CompiledTemplate) Render(name string, labels map[string]string) (*fleetplanev1.DeviceSpec, error) {
	out := proto.Clone(c.spec).(*fleetplanev1.DeviceSpec)
	if len(c.trees) == 0 {
		return out, nil
	}

	var errs []error
	walkStrings(out.ProtoReflect(), "spec", func(path, _ string, set func(string)) {
		tree, ok := c.trees[path]
		if !ok {
			return
		}
		e := evaluator{name: name, labels: labels, field: path}
		var b strings.Builder
		e.list(&b, tree.Root)
		if len(e.errs) > 0 {
			errs = append(errs, e.errs...)
			return
		}
		set(b.String())
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// value is the result of a template expression.
type value struct {
	str     string
	boolean bool
	isBool  bool
	// labels is set for the .metadata.labels map, which only getOrDefault receives.
	labels map[string]string
	// missingLabel names the label the value came from when the device does not have it. The
	// value is then the empty string, and printing it is an error.
	missingLabel string
}

func (v value) truth() bool {
	if v.isBool {
		return v.boolean
	}
	return v.str != ""
}

func (v value) text() string {
	if v.isBool {
		return strconv.FormatBool(v.boolean)
	}
	return v.str
}

func boolValue(b bool) value { return value{boolean: b, isBool: true} }

// evaluator renders one checked parse tree. It relies on the checker: node kinds, functions and
// argument counts are valid, so the only failure left is a missing label that reaches the output.
type evaluator struct {
	name   string
	labels map[string]string
	field  string
	errs   []error
}

func (e *evaluator) list(b *strings.Builder, l *parse.ListNode) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			b.Write(n.Text)
		case *parse.ActionNode:
			v := e.pipe(n.Pipe)
			if v.missingLabel != "" {
				e.errs = append(e.errs, &MissingLabelError{Device: e.name, Label: v.missingLabel, Field: e.field})
				continue
			}
			b.WriteString(v.text())
		case *parse.IfNode:
			if e.pipe(n.Pipe).truth() {
				e.list(b, n.List)
			} else {
				e.list(b, n.ElseList)
			}
		}
	}
}

func (e *evaluator) pipe(p *parse.PipeNode) value {
	var result value
	for i, cmd := range p.Cmds {
		var piped *value
		if i > 0 {
			piped = &result
		}
		result = e.command(cmd, piped)
	}
	return result
}

func (e *evaluator) command(cmd *parse.CommandNode, piped *value) value {
	ident, isCall := cmd.Args[0].(*parse.IdentifierNode)
	if !isCall {
		return e.operand(cmd.Args[0])
	}
	args := cmd.Args[1:]
	if piped != nil {
		// The piped value goes last; wrap it so that and/or can still evaluate lazily.
		args = append(append([]parse.Node(nil), args...), nil)
	}
	arg := func(i int) value {
		if args[i] == nil {
			return *piped
		}
		return e.operand(args[i])
	}
	return e.call(ident.Ident, len(args), arg)
}

// call runs a function on n arguments, evaluated on demand by arg so that and/or stop early as
// text/template's do.
func (e *evaluator) call(name string, n int, arg func(int) value) value {
	switch name {
	case "upper":
		return mapString(arg(0), strings.ToUpper)
	case "lower":
		return mapString(arg(0), strings.ToLower)
	case "replace":
		old, replacement, subject := arg(0), arg(1), arg(2)
		out := value{str: strings.ReplaceAll(subject.text(), old.text(), replacement.text())}
		out.missingLabel = firstMissing(subject, old, replacement)
		return out
	case "getOrDefault":
		labels, key, def := arg(0), arg(1), arg(2)
		if v, ok := labels.labels[key.text()]; ok {
			return value{str: v}
		}
		return def
	case "eq":
		first := arg(0)
		for i := 1; i < n; i++ {
			if equal(first, arg(i)) {
				return boolValue(true)
			}
		}
		return boolValue(false)
	case "ne":
		return boolValue(!equal(arg(0), arg(1)))
	case "not":
		return boolValue(!arg(0).truth())
	case "and", "or":
		// Like text/template: return the first argument that decides the result, or the last.
		var v value
		for i := 0; i < n; i++ {
			v = arg(i)
			if v.truth() == (name == "or") {
				return v
			}
		}
		return v
	}
	// The checker rejects every other name.
	return value{}
}

func (e *evaluator) operand(n parse.Node) value {
	switch n := n.(type) {
	case *parse.FieldNode:
		return e.lookup(n.Ident)
	case *parse.StringNode:
		return value{str: n.Text}
	case *parse.BoolNode:
		return boolValue(n.True)
	case *parse.NumberNode:
		return value{str: n.Text}
	case *parse.PipeNode:
		return e.pipe(n)
	}
	// The checker rejects every other operand, including a function named without arguments.
	return value{}
}

func (e *evaluator) lookup(ident []string) value {
	switch {
	case len(ident) == 2 && ident[1] == "name":
		return value{str: e.name}
	case len(ident) == 2:
		return value{labels: e.labels}
	}
	key := ident[2]
	if v, ok := e.labels[key]; ok {
		return value{str: v}
	}
	return value{missingLabel: key}
}

func mapString(v value, f func(string) string) value {
	return value{str: f(v.text()), missingLabel: v.missingLabel}
}

func firstMissing(values ...value) string {
	for _, v := range values {
		if v.missingLabel != "" {
			return v.missingLabel
		}
	}
	return ""
}

// equal compares two values; a string never equals a boolean.
func equal(a, b value) bool {
	if a.isBool != b.isBool {
		return false
	}
	if a.isBool {
		return a.boolean == b.boolean
	}
	return a.str == b.str
}
