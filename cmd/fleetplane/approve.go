package main

import (
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	fleetplanev1 "github.com/fleetplane/fleetplane/gen/fleetplane/v1"
)

func init() {
	extraCommands = append(extraCommands, newApproveCommand, newDenyCommand)
}

func newApproveCommand(a *app) *cobra.Command {
	var labels []string
	cmd := &cobra.Command{
		Use:   "approve NAME [--label KEY=VALUE]...",
		Short: "Approve a device's enrollment request, creating the device with the given labels",
		Long: "Approve a device's enrollment request. The new device gets the labels that the\n" +
			"request asked for (see get enrollmentrequest NAME -o yaml) and each --label on top.",
		Example: `  fleetplane get enrollmentrequests
  fleetplane approve dev-3f9a1c0b2d4e5f60 --label fleet=demo --label site=berlin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			parsed, err := parseLabelFlags(labels)
			if err != nil {
				return err
			}
			return a.decide(cmd, args[0], true, parsed)
		},
	}
	cmd.Flags().StringArrayVarP(&labels, "label", "l", nil,
		"label KEY=VALUE for the new device, added to the requested labels (repeatable)")
	return cmd
}

func newDenyCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "deny NAME",
		Short: "Deny a device's enrollment request",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.decide(cmd, args[0], false, nil)
		},
	}
}

// decide approves or denies the enrollment request name and prints the outcome.
func (a *app) decide(cmd *cobra.Command, name string, approve bool, labels map[string]string) error {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	_, err := a.client().EnrollmentRequests.ApproveEnrollmentRequest(cmd.Context(),
		connect.NewRequest(&fleetplanev1.ApproveEnrollmentRequestRequest{
			Name:     name,
			Approved: approve,
			Labels:   labels,
		}))
	if err != nil {
		return a.apiError(fmt.Sprintf("%s enrollment request %q", verb, name), err)
	}
	if approve {
		_, err = fmt.Fprintf(a.stdout, "enrollmentrequest/%s approved; device/%s created\n", name, name)
	} else {
		_, err = fmt.Fprintf(a.stdout, "enrollmentrequest/%s denied\n", name)
	}
	return err
}

// parseLabelFlags turns KEY=VALUE flags into a map, rejecting malformed keys and values with
// the rule they break.
func parseLabelFlags(flags []string) (map[string]string, error) {
	labels := make(map[string]string, len(flags))
	for _, flag := range flags {
		key, value, ok := strings.Cut(flag, "=")
		if !ok {
			return nil, fmt.Errorf("invalid --label %q: write it as KEY=VALUE", flag)
		}
		if problems := validation.IsQualifiedName(key); len(problems) > 0 {
			return nil, fmt.Errorf("invalid --label %q: key: %s", flag, strings.Join(problems, "; "))
		}
		if problems := validation.IsValidLabelValue(value); len(problems) > 0 {
			return nil, fmt.Errorf("invalid --label %q: value: %s", flag, strings.Join(problems, "; "))
		}
		labels[key] = value
	}
	return labels, nil
}
