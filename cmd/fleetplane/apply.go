package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/fleetplane/fleetplane/client"
	"github.com/fleetplane/fleetplane/client/resourcefile"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// applyAttempts bounds the get-and-update retries when another writer changes an object
// between the get and the update.
const applyAttempts = 5

func newApplyCommand(a *app) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update resources from YAML or JSON files",
		Long: "Create or update the resources in the given files. A directory contributes its\n" +
			"*.yaml, *.yml and *.json files in name order; - reads standard input.\n\n" +
			"Every document is parsed and checked before anything is written, so an error\n" +
			"that apply finds itself, such as invalid YAML, an unknown field or an invalid\n" +
			"name, changes nothing. The server checks more, such as fleet templates, and can\n" +
			"reject a document after earlier documents were applied. Apply then goes on with\n" +
			"the remaining documents and lists which were applied and which failed. Applied\n" +
			"documents are not rolled back.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return errors.New(`no input: pass -f FILE, -f DIR or -f - for standard input`)
			}
			docs, err := resourcefile.Load(files, a.stdin)
			if err != nil {
				return fmt.Errorf("nothing was applied because of these errors:\n%w", err)
			}
			if len(docs) == 0 {
				return errors.New("nothing to apply: the input contains no documents")
			}
			return a.applyAll(cmd.Context(), docs)
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil,
		"file, directory or - (standard input) to apply; repeatable")
	return cmd
}

// applyAll applies every document in order, continuing past documents that the server
// rejects, and returns an error that lists the documents applied and those that failed. It
// stops at the first error that makes further calls pointless, such as an unreachable server.
func (a *app) applyAll(ctx context.Context, docs []*resourcefile.Document) error {
	c := a.client()
	var applied, failed []string
	for i, doc := range docs {
		result, err := a.applyOne(ctx, c, doc)
		if unreachable(err) {
			if len(applied) == 0 && len(failed) == 0 {
				return err
			}
			var notApplied []string
			for _, rest := range docs[i:] {
				notApplied = append(notApplied, rest.String())
			}
			return fmt.Errorf("%w\napplied before this error: %s\nfailed: %s\nnot attempted: %s",
				err, listOrNone(applied), listOrNone(failed), strings.Join(notApplied, ", "))
		}
		if err != nil {
			fmt.Fprintf(a.stderr, "error: %s (%s): %v\n", doc, doc.Location(), err)
			failed = append(failed, fmt.Sprintf("%s (%s)", doc, doc.Location()))
			continue
		}
		applied = append(applied, doc.String())
		fmt.Fprintf(a.stdout, "%s %s\n", doc, result)
	}
	if len(failed) == 0 {
		return nil
	}
	if len(applied) == 0 {
		return fmt.Errorf("all %d documents failed, so nothing was applied: %s", len(docs),
			strings.Join(failed, ", "))
	}
	return fmt.Errorf("%d of %d documents failed, so the input was applied only in part\n"+
		"applied: %s\nfailed: %s\n"+
		"fix the failed documents and apply again; the applied ones then show as unchanged",
		len(failed), len(docs), strings.Join(applied, ", "), strings.Join(failed, ", "))
}

func listOrNone(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ", ")
}

// applyOne creates the document's object, or updates it when it exists, and returns
// "created", "configured" or "unchanged".
func (a *app) applyOne(ctx context.Context, c *client.Client, doc *resourcefile.Document) (string, error) {
	what := fmt.Sprintf("apply %s", doc)
	_, err := c.Create(ctx, proto.Clone(doc.Object))
	if err == nil {
		return "created", nil
	}
	if !isCode(err, connect.CodeAlreadyExists) {
		return "", a.apiError(what, err)
	}
	if !doc.Kind.Can("update") {
		current, err := c.Get(ctx, doc.Kind, doc.Name())
		if err != nil {
			return "", a.apiError(what, err)
		}
		if sameContent(current, doc.Object) {
			return "unchanged", nil
		}
		return "", fmt.Errorf("%s cannot be changed once created; delete it with "+
			`"fleetplane delete %s %s" and apply again`, doc, strings.ToLower(doc.Kind.Name),
			doc.Name())
	}
	pinned := resourceVersion(doc.Object)
	for attempt := 1; ; attempt++ {
		current, err := c.Get(ctx, doc.Kind, doc.Name())
		if err != nil {
			return "", a.apiError(what, err)
		}
		obj := withOwnedSpec(current, doc.Object)
		if sameContent(current, obj) {
			return "unchanged", nil
		}
		if pinned == "" {
			setResourceVersion(obj, resourceVersion(current))
		}
		_, err = c.Update(ctx, obj)
		switch {
		case err == nil:
			return "configured", nil
		case !isCode(err, connect.CodeAborted):
			return "", a.apiError(what, err)
		case pinned != "":
			return "", staleError(ctx, c, doc, pinned)
		case attempt == applyAttempts:
			return "", fmt.Errorf("%s: it kept changing during %d attempts; apply again",
				what, applyAttempts)
		}
	}
}

// withOwnedSpec returns a copy of want. When want is a device without a spec and a fleet owns
// the current device, the copy takes the current spec, because the fleet sets it and the
// server rejects any other spec for an owned device.
func withOwnedSpec(current, want proto.Message) proto.Message {
	out := proto.Clone(want)
	have, ok := current.(*fleetplanev1.Device)
	device, isDevice := out.(*fleetplanev1.Device)
	if !ok || !isDevice || device.Spec != nil ||
		!strings.HasPrefix(have.GetMetadata().GetOwner(), "Fleet/") {
		return out
	}
	device.Spec = &fleetplanev1.DeviceSpec{}
	if have.GetSpec() != nil {
		device.Spec = proto.Clone(have.GetSpec()).(*fleetplanev1.DeviceSpec)
	}
	return out
}

// staleError explains an update rejected because the file's resourceVersion is out of date.
func staleError(ctx context.Context, c *client.Client, doc *resourcefile.Document, pinned string) error {
	now := "unknown"
	if current, err := c.Get(ctx, doc.Kind, doc.Name()); err == nil {
		now = resourceVersion(current)
	}
	kind := strings.ToLower(doc.Kind.Name)
	return fmt.Errorf("%s %q was modified since this file was exported (resourceVersion %s, "+
		`now %s); get it again with "fleetplane get %s %s -o yaml", edit and apply`,
		kind, doc.Name(), pinned, now, kind, doc.Name())
}

// sameContent reports whether applying want would leave have's labels, annotations and spec
// as they are.
func sameContent(have, want proto.Message) bool {
	hm, wm := meta(have), meta(want)
	if !equalMaps(hm.GetLabels(), wm.GetLabels()) ||
		!equalMaps(userAnnotations(hm), userAnnotations(wm)) {
		return false
	}
	return proto.Equal(field(have, "spec"), field(want, "spec"))
}

// serverAnnotationPrefix starts the annotations that only the server sets; an update keeps
// them whatever the request contains.
const serverAnnotationPrefix = "fleetplane.dev/"

func userAnnotations(m *fleetplanev1.ObjectMeta) map[string]string {
	out := map[string]string{}
	for k, v := range m.GetAnnotations() {
		if !strings.HasPrefix(k, serverAnnotationPrefix) {
			out[k] = v
		}
	}
	return out
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// field returns the message field name of obj, or an empty message when it is unset.
func field(obj proto.Message, name protoreflect.Name) proto.Message {
	m := obj.ProtoReflect()
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil || fd.Message() == nil {
		return nil
	}
	if !m.Has(fd) {
		return m.Get(fd).Message().Type().New().Interface()
	}
	return m.Get(fd).Message().Interface()
}

func meta(obj proto.Message) *fleetplanev1.ObjectMeta {
	m, _ := field(obj, "metadata").(*fleetplanev1.ObjectMeta)
	return m
}

func resourceVersion(obj proto.Message) string { return meta(obj).GetResourceVersion() }

func setResourceVersion(obj proto.Message, version string) {
	m := obj.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("metadata")
	m.Mutable(fd).Message().Interface().(*fleetplanev1.ObjectMeta).ResourceVersion = version
}
