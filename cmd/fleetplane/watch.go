package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fleetplane/fleetplane/client"
	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
	"google.golang.org/protobuf/proto"
)

// watch prints initial, then one entry per change from version on, until ctx ends or the
// server closes the stream. Tables gain an EVENT column; initial rows show LISTED there.
func (a *app) watch(ctx context.Context, kind *client.Kind, initial []proto.Message,
	version string, o getOptions) error {
	w, err := a.client().Watch(ctx, kind, &fleetplanev1.WatchOptions{
		LabelSelector: o.labelSelector, FieldSelector: o.fieldSelector, ResourceVersion: version})
	if err != nil {
		return a.apiError("watch "+kind.Plural, err)
	}
	defer w.Close()

	print, err := a.watchPrinter(kind, initial, o.output)
	if err != nil {
		return err
	}
	for _, obj := range initial {
		if err := print("LISTED", obj); err != nil {
			return err
		}
	}
	for {
		ev, err := w.Next()
		switch {
		case ctx.Err() != nil:
			return nil // interrupted, which is how a watch normally ends
		case errors.Is(err, io.EOF):
			return errors.New("watch " + kind.Plural + ": the server closed the stream; run the command again")
		case err != nil:
			return a.apiError("watch "+kind.Plural, err)
		}
		if ev.Object == nil || ev.Type == fleetplanev1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK {
			continue
		}
		change := strings.TrimPrefix(ev.Type.String(), "WATCH_EVENT_TYPE_")
		if err := print(change, ev.Object); err != nil {
			return err
		}
	}
}

// watchPrinter returns a function that prints one watch entry in format. Table columns are
// sized once, from the initial objects, so that later rows line up with the header.
func (a *app) watchPrinter(kind *client.Kind, initial []proto.Message,
	format string) (func(change string, obj proto.Message) error, error) {
	switch format {
	case outputTable, outputWide:
		header := append([]string{"EVENT"}, columns(kind)...)
		now := time.Now()
		rows := [][]string{{"MODIFIED"}}
		for _, obj := range initial {
			rows = append(rows, append([]string{"LISTED"}, row(obj, now)...))
		}
		t := newTable(header, rows, widthFor(format))
		return func(change string, obj proto.Message) error {
			return t.writeRow(a.stdout, append([]string{change}, row(obj, time.Now())...))
		}, t.writeHeader(a.stdout)
	case outputName:
		return func(change string, obj proto.Message) error {
			_, err := fmt.Fprintf(a.stdout, "%s %s\n", objectName(kind, obj), strings.ToLower(change))
			return err
		}, nil
	}
	first := true
	return func(_ string, obj proto.Message) error {
		if !first && format == outputYAML {
			fmt.Fprintln(a.stdout, "---")
		}
		first = false
		return a.writeObject(obj, format)
	}, nil
}
