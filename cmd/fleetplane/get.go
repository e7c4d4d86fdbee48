package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fleetplane/fleetplane/client"
	"github.com/fleetplane/fleetplane/client/resourcefile"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
)

// Output formats of get.
const (
	outputTable = "table"
	outputWide  = "wide" // a table whose cells are never trimmed
	outputYAML  = "yaml"
	outputJSON  = "json"
	outputName  = "name"
)

type getOptions struct {
	labelSelector string
	fieldSelector string
	output        string
	watch         bool
	limit         int
	rendered      bool
}

func newGetCommand(a *app) *cobra.Command {
	var o getOptions
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show one resource or list resources of a kind",
		Long: "Show one resource or list resources. KIND is one of device (dev), fleet,\n" +
			"templateversion (tv), repository (repo), resourcesync (rs), enrollmentrequest\n" +
			"(er, csr), event (ev), task, replica or agentsession (session). Every name and\n" +
			"short name also works in the plural, such as devices or devs.",
		Args: kindArgs(2, "fleetplane get devices"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := resolveKind(args[0])
			if err != nil {
				return err
			}
			if err := o.check(kind, args); err != nil {
				return err
			}
			if len(args) == 2 {
				return a.getOne(cmd.Context(), kind, args[1], o)
			}
			return a.getList(cmd.Context(), kind, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.labelSelector, "selector", "l", "",
		"label selector, such as fleet=demo,site!=b or 'site in (a,b)'")
	f.StringVar(&o.fieldSelector, "field-selector", "",
		"field selector, such as metadata.owner=Fleet/demo or status.summary.status=Online")
	f.StringVarP(&o.output, "output", "o", outputTable, "output format: table, wide (a table that trims no cell), yaml, json or name")
	f.BoolVarP(&o.watch, "watch", "w", false,
		"after the current state, print one entry per change until interrupted")
	f.IntVar(&o.limit, "limit", 0, "show at most this many objects; 0 shows all")
	f.BoolVar(&o.rendered, "rendered", false,
		"with get device NAME: print the spec rendered for the agent, as YAML")
	return cmd
}

func (o *getOptions) check(kind *client.Kind, args []string) error {
	switch o.output {
	case outputTable, outputWide, outputYAML, outputJSON, outputName:
	default:
		return fmt.Errorf("invalid --output %q: use table, wide, yaml, json or name", o.output)
	}
	if o.limit < 0 {
		return fmt.Errorf("invalid --limit %d: use 0 for all or a positive number", o.limit)
	}
	if o.rendered && (kind.Name != "Device" || len(args) != 2 || o.watch) {
		return errors.New("--rendered works only with get device NAME, without --watch")
	}
	if o.watch && !kind.Can("watch") {
		return fmt.Errorf("%s cannot be watched; run get without --watch", kind.Plural)
	}
	if len(args) == 2 && (o.labelSelector != "" || o.fieldSelector != "") {
		return errors.New("-l and --field-selector apply to lists; drop NAME or the selectors")
	}
	return nil
}

func (a *app) getOne(ctx context.Context, kind *client.Kind, objName string, o getOptions) error {
	c := a.client()
	what := fmt.Sprintf("get %s %q", strings.ToLower(kind.Name), objName)
	if o.rendered {
		spec, err := c.GetRenderedDevice(ctx, objName)
		if err != nil {
			return a.apiError(what+" rendered spec", err)
		}
		out, err := resourcefile.Marshal(spec, resourcefile.FormatYAML)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(out)
		return err
	}
	if !kind.Can("get") {
		return fmt.Errorf("%s cannot be read by name; run \"fleetplane get %s\"",
			kind.Plural, kind.Plural)
	}
	obj, err := c.Get(ctx, kind, objName)
	if err != nil {
		err = a.apiError(what, err)
		if !unreachable(err) && strings.HasSuffix(err.Error(), "not found") {
			err = fmt.Errorf(`%w; list them with "fleetplane get %s"`, err, kind.Plural)
		}
		return err
	}
	if o.watch {
		o.fieldSelector = "metadata.name=" + objName
		return a.watch(ctx, kind, []proto.Message{obj}, resourceVersion(obj), o)
	}
	if o.output == outputJSON || o.output == outputYAML {
		return a.writeObject(obj, o.output)
	}
	return a.printList(kind, []proto.Message{obj}, o.output)
}

func (a *app) getList(ctx context.Context, kind *client.Kind, o getOptions) error {
	c := a.client()
	page, err := c.ListAll(ctx, kind, client.ListOptions{
		LabelSelector: o.labelSelector, FieldSelector: o.fieldSelector}, o.limit)
	if err != nil {
		return a.apiError("list "+kind.Plural, err)
	}
	if o.watch {
		return a.watch(ctx, kind, page.Items, page.ResourceVersion, o)
	}
	if len(page.Items) == 0 && (o.output == outputTable || o.output == outputWide) {
		_, err := fmt.Fprintf(a.stderr, "no %s found\n", kind.Plural)
		return err
	}
	return a.printList(kind, page.Items, o.output)
}

// printList writes objs in format. YAML output separates objects with "---", and JSON output
// is one List object, so that both can be applied again.
func (a *app) printList(kind *client.Kind, objs []proto.Message, format string) error {
	switch format {
	case outputTable, outputWide:
		rows := make([][]string, len(objs))
		now := time.Now()
		for i, obj := range objs {
			rows[i] = row(obj, now)
		}
		t := newTable(columns(kind), rows, widthFor(format))
		if err := t.writeHeader(a.stdout); err != nil {
			return err
		}
		for _, r := range rows {
			if err := t.writeRow(a.stdout, r); err != nil {
				return err
			}
		}
		return nil
	case outputName:
		for _, obj := range objs {
			fmt.Fprintln(a.stdout, objectName(kind, obj))
		}
		return nil
	case outputJSON:
		return a.writeJSONList(objs)
	}
	for i, obj := range objs {
		if i > 0 {
			fmt.Fprintln(a.stdout, "---")
		}
		if err := a.writeObject(obj, format); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) writeObject(obj proto.Message, format string) error {
	out, err := resourcefile.Marshal(obj, format)
	if err != nil {
		return err
	}
	_, err = a.stdout.Write(out)
	return err
}

// writeJSONList writes objs as {"apiVersion": ..., "kind": "List", "items": [...]}.
func (a *app) writeJSONList(objs []proto.Message) error {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n  \"apiVersion\": %q,\n  \"kind\": \"List\",\n  \"items\": [", client.APIVersion)
	for i, obj := range objs {
		out, err := resourcefile.Marshal(obj, outputJSON)
		if err != nil {
			return err
		}
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n    ")
		b.WriteString(strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n    "))
	}
	if len(objs) > 0 {
		b.WriteString("\n  ")
	}
	b.WriteString("]\n}\n")
	_, err := io.WriteString(a.stdout, b.String())
	return err
}

// kindArgs accepts KIND and then names, at most maxArgs arguments in all unless maxArgs is 0.
func kindArgs(maxArgs int, example string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return fmt.Errorf("missing KIND: use one of device, fleet, templateversion, "+
				"repository, resourcesync, enrollmentrequest, event, task, replica or "+
				"agentsession, as in %q",
				example)
		}
		if maxArgs > 0 && len(args) > maxArgs {
			return fmt.Errorf("too many arguments %q: %s takes KIND and at most one NAME",
				args[maxArgs:], cmd.Name())
		}
		return nil
	}
}

// objectName returns "kind/name", or "kind/key" for objects without metadata.
func objectName(kind *client.Kind, obj proto.Message) string {
	prefix := strings.ToLower(kind.Name) + "/"
	switch o := obj.(type) {
	case *fleetplanev1.Task:
		return prefix + o.GetKind() + "/" + o.GetKey()
	case *fleetplanev1.Replica:
		return prefix + o.GetId()
	}
	return prefix + meta(obj).GetName()
}

// widthFor returns the table width of an output format: tableWidth, or 0 (no trimming) for
// wide.
func widthFor(format string) int {
	if format == outputWide {
		return 0
	}
	return tableWidth
}
