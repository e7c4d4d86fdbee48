package tasks

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/template/parse"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
)

// Template parameters.
//
// A string field of a device template may contain Go text/template actions, limited to:
//
//   - the fields .metadata.name and .metadata.labels.KEY, and .metadata.labels itself only as the
//     first argument of getOrDefault;
//   - the functions upper STRING, lower STRING, replace OLD NEW STRING (the argument order lets
//     a pipeline feed the subject: {{ .metadata.name | replace "-" "_" }}), getOrDefault
//     .metadata.labels KEY DEFAULT, and the text/template built-ins eq, ne, and, or and not;
//   - if/else if/else, pipelines, parentheses, comments, and string, boolean and number literals.
//     A number literal is compared as its text, because label values are strings.
//
// Everything else (.spec, .status, .metadata.owner, variables, range, with, define, template,
// block and any other function) is rejected when the fleet is validated.
//
// A label that the device does not have is the empty string when it is tested (if, eq, ne, and,
// or, not) or passed through getOrDefault. When its value would be written into the field, the
// device gets a MissingLabelError and keeps its previous spec. Rendering cannot fail in any
// other way, so a template that passes ValidateTemplate renders for every device that has the
// labels it prints. A template that fails ValidateTemplate renders for no device. FuzzTemplate
// checks both properties.
//
// NOTE: a label key that is not a Go identifier (such as "app.kubernetes.io/name") cannot be
// written as .metadata.labels.KEY; use getOrDefault .metadata.labels "KEY" "" instead.

// functionArity is the number of arguments each allowed function takes; max -1 means no limit.
var functionArity = map[string]struct{ min, max int }{
	"upper":        {1, 1},
	"lower":        {1, 1},
	"replace":      {3, 3},
	"getOrDefault": {3, 3},
	"eq":           {2, -1},
	"ne":           {2, 2},
	"and":          {1, -1},
	"or":           {1, -1},
	"not":          {1, 1},
}

// allowedFunctions lists functionArity's keys for error messages.
var allowedFunctions = func() string {
	names := make([]string, 0, len(functionArity))
	for name := range functionArity {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}()

const allowedFields = ".metadata.name and .metadata.labels.KEY"

// CompiledTemplate is a device spec whose template fields are parsed and checked, ready to be
// rendered for many devices. It is safe for concurrent use.
type CompiledTemplate struct {
	spec *fleetplanev1.DeviceSpec
	// trees holds the parsed template of every string field that contains an action, by path.
	trees map[string]*parse.Tree
}

// ValidateTemplate checks every string field of t's spec and returns one error per problem,
// each naming the field path (for example spec.config[0].inline[0].content), line and column.
// It returns nil when the template renders for every device that has the labels it prints.
func ValidateTemplate(t *fleetplanev1.DeviceTemplate) []error {
	_, errs := CompileTemplate(t.GetSpec())
	return errs
}

// CompileTemplate parses and checks every string field of spec. It returns the problems found,
// as ValidateTemplate does, or a CompiledTemplate.
func CompileTemplate(spec *fleetplanev1.DeviceSpec) (*CompiledTemplate, []error) {
	c := &CompiledTemplate{
		spec:  &fleetplanev1.DeviceSpec{},
		trees: make(map[string]*parse.Tree),
	}
	if spec != nil {
		c.spec = proto.Clone(spec).(*fleetplanev1.DeviceSpec)
	}

	var errs []error
	walkStrings(c.spec.ProtoReflect(), "spec", func(path, value string, _ func(string)) {
		if !strings.Contains(value, "{{") {
			return
		}
		tree, err := parseField(path, value)
		if err != nil {
			errs = append(errs, err)
			return
		}
		ch := checker{tree: tree}
		ch.list(tree.Root)
		if len(ch.errs) > 0 {
			errs = append(errs, ch.errs...)
			return
		}
		c.trees[path] = tree
	})
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// Render compiles spec and renders it for the device with the given name and labels. Errors
// are either the validation errors of the template or MissingLabelErrors.
func Render(spec *fleetplanev1.DeviceSpec, name string, labels map[string]string) (*fleetplanev1.DeviceSpec, error) {
	c, errs := CompileTemplate(spec)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c.Render(name, labels)
}

// parseField parses one field's value. The tree is named after the field path, so positions in
// errors read "spec.config[0].inline[0].content:1:5".
func parseField(path, value string) (*parse.Tree, error) {
	tree := parse.New(path)
	// Functions are checked by the checker, which gives a more useful message than the parser.
	tree.Mode = parse.SkipFuncCheck
	treeSet := make(map[string]*parse.Tree)
	if _, err := tree.Parse(value, "", "", treeSet); err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "template: "))
	}
	for name := range treeSet {
		if name != path {
			return nil, fmt.Errorf("%s: define and block are not allowed in device templates", path)
		}
	}
	return tree, nil
}

// operandKind is the static type of a template expression.
type operandKind int

const (
	kindScalar operandKind = iota // a string or a boolean
	kindLabels                    // the .metadata.labels map
)

// checker walks a parse tree and collects every construct that device templates do not allow.
type checker struct {
	tree *parse.Tree
	errs []error
}

func (c *checker) fail(n parse.Node, format string, args ...any) {
	location, _ := c.tree.ErrorContext(n)
	c.errs = append(c.errs, fmt.Errorf("%s: %s", location, fmt.Sprintf(format, args...)))
}

func (c *checker) list(l *parse.ListNode) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		c.node(n)
	}
}

func (c *checker) node(n parse.Node) {
	switch n := n.(type) {
	case *parse.TextNode, *parse.CommentNode:
	case *parse.ActionNode:
		c.scalar(n.Pipe, c.pipe(n.Pipe))
	case *parse.IfNode:
		c.scalar(n.Pipe, c.pipe(n.Pipe))
		c.list(n.List)
		c.list(n.ElseList)
	case *parse.RangeNode:
		c.fail(n, "range is not allowed in device templates")
	case *parse.WithNode:
		c.fail(n, "with is not allowed in device templates")
	case *parse.TemplateNode:
		c.fail(n, "template and block are not allowed in device templates")
	default:
		c.fail(n, "%s is not allowed in device templates", n)
	}
}

// scalar reports an error when a pipeline whose value is tested or printed is the labels map.
func (c *checker) scalar(n parse.Node, kind operandKind) {
	if kind == kindLabels {
		c.fail(n, ".metadata.labels is a map; use .metadata.labels.KEY or getOrDefault .metadata.labels KEY DEFAULT")
	}
}

func (c *checker) pipe(p *parse.PipeNode) operandKind {
	if len(p.Decl) > 0 {
		c.fail(p, "variables are not allowed in device templates")
		return kindScalar
	}
	var piped *operandKind
	kind := kindScalar
	for _, cmd := range p.Cmds {
		kind = c.command(cmd, piped)
		piped = &kind
	}
	return kind
}

// command checks one command of a pipeline. piped is the kind of the previous command's
// result, which text/template passes as the last argument, or nil for the first command.
func (c *checker) command(cmd *parse.CommandNode, piped *operandKind) operandKind {
	ident, isCall := cmd.Args[0].(*parse.IdentifierNode)
	if !isCall {
		if piped != nil || len(cmd.Args) > 1 {
			c.fail(cmd, "%s is not a function, so it cannot take arguments", cmd.Args[0])
		}
		return c.operand(cmd.Args[0])
	}

	kinds := make([]operandKind, 0, len(cmd.Args))
	for _, arg := range cmd.Args[1:] {
		kinds = append(kinds, c.operand(arg))
	}
	if piped != nil {
		kinds = append(kinds, *piped)
	}
	c.call(cmd, ident.Ident, kinds)
	return kindScalar
}

// call checks a function's name, argument count and argument kinds.
func (c *checker) call(n parse.Node, name string, kinds []operandKind) {
	arity, ok := functionArity[name]
	if !ok {
		c.fail(n, "function %q is not allowed in device templates; use one of %s", name, allowedFunctions)
		return
	}
	switch {
	case len(kinds) < arity.min:
		c.fail(n, "%s needs at least %d arguments, got %d", name, arity.min, len(kinds))
		return
	case arity.max >= 0 && len(kinds) > arity.max:
		c.fail(n, "%s takes at most %d arguments, got %d", name, arity.max, len(kinds))
		return
	}
	for i, kind := range kinds {
		wantLabels := name == "getOrDefault" && i == 0
		switch {
		case wantLabels && kind != kindLabels:
			c.fail(n, "the first argument of getOrDefault must be .metadata.labels")
		case !wantLabels && kind == kindLabels:
			c.fail(n, "argument %d of %s is the .metadata.labels map; use .metadata.labels.KEY", i+1, name)
		}
	}
}

func (c *checker) operand(n parse.Node) operandKind {
	switch n := n.(type) {
	case *parse.FieldNode:
		return c.field(n)
	case *parse.StringNode, *parse.BoolNode:
		return kindScalar
	case *parse.NumberNode:
		return kindScalar
	case *parse.PipeNode:
		return c.pipe(n)
	case *parse.IdentifierNode:
		// A function named as an argument is called with no arguments.
		c.call(n, n.Ident, nil)
		return kindScalar
	case *parse.VariableNode:
		c.fail(n, "variables are not allowed in device templates; use %s", allowedFields)
	case *parse.DotNode:
		c.fail(n, "{{ . }} is not allowed in device templates; use %s", allowedFields)
	case *parse.ChainNode:
		c.fail(n, "field access on an expression is not allowed in device templates; use %s", allowedFields)
	default:
		c.fail(n, "%s is not allowed in device templates", n)
	}
	return kindScalar
}

func (c *checker) field(n *parse.FieldNode) operandKind {
	ident := n.Ident
	switch {
	case len(ident) == 2 && ident[0] == "metadata" && ident[1] == "name":
		return kindScalar
	case len(ident) == 2 && ident[0] == "metadata" && ident[1] == "labels":
		return kindLabels
	case len(ident) == 3 && ident[0] == "metadata" && ident[1] == "labels":
		return kindScalar
	}
	c.fail(n, "field %s is not available in device templates; use %s", n, allowedFields)
	return kindScalar
}
