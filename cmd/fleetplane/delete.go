package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newDeleteCommand(a *app) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "delete KIND NAME... | delete KIND --all",
		Short: "Delete resources by name, or every device, fleet or repository",
		Args:  kindArgs(0, "fleetplane delete device kiosk-1"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := resolveKind(args[0])
			if err != nil {
				return err
			}
			names := args[1:]
			ctx := cmd.Context()
			c := a.client()
			switch {
			case all && len(names) > 0:
				return errors.New("pass either names or --all, not both")
			case all:
				if !kind.Can("deleteAll") {
					return fmt.Errorf("%s cannot be deleted with --all; delete them by name",
						kind.Plural)
				}
				n, err := c.DeleteAll(ctx, kind)
				if err != nil {
					return a.apiError("delete all "+kind.Plural, err)
				}
				_, err = fmt.Fprintf(a.stdout, "%d %s deleted\n", n, kind.Plural)
				return err
			case len(names) == 0:
				return fmt.Errorf("missing NAME: pass the names of the %s to delete, or --all",
					kind.Plural)
			}
			var failed []string
			for _, name := range names {
				what := fmt.Sprintf("delete %s %q", strings.ToLower(kind.Name), name)
				if err := c.Delete(ctx, kind, name); err != nil {
					err = a.apiError(what, err)
					if unreachable(err) {
						return err
					}
					fmt.Fprintln(a.stderr, "error:", err)
					failed = append(failed, name)
					continue
				}
				fmt.Fprintf(a.stdout, "%s/%s deleted\n", strings.ToLower(kind.Name), name)
			}
			if len(failed) > 0 {
				return fmt.Errorf("%d of %d deletions failed: %s", len(failed), len(names),
					strings.Join(failed, ", "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "delete every object of the kind "+
		"(devices, fleets and repositories only)")
	return cmd
}
